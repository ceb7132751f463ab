"""Reading a library: nearest-neighbour search and the stored neighbour lists at the top,
then one package per subsystem built on them: labelling, duplicates and the map."""

__all__ = ["cell_lists", "csv_cells", "duplicates", "labelling", "map", "neighbour_lists", "searcher"]
