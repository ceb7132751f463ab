"""The 2-D map of the collection: laying the vectors out in the plane, and storing the layout
beside the library (kept current by difference)."""

__all__ = ["layout", "store"]
