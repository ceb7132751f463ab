"""The command that lays out the collection map: map."""

from __future__ import annotations

import click

from lookalike.options import library_option, open_library, settings_from

METHOD_CHOICES = ("umap", "graph")  # search.map.layout.METHODS, listed here so --help does not import numpy


@click.command("map")
@library_option
@click.option("--refit", is_flag=True, help="Fit the whole layout again instead of placing new photos.")
@click.option("--method", type=click.Choice(METHOD_CHOICES), default=None,
              help="Layout method [default graph; umap needs the umap extra].")
def map_command(library, refit, method):
    """Compute or refresh the 2-D map of the collection (the web's Map page).

    The first run fits a layout; later runs place new photos where their neighbours are, and fit
    again when more than half of the photos are new or the backbone changed.
    """
    from search.map.layout import LayoutError
    from search.map.store import MapBusy, update_map

    settings = settings_from(library=library)
    with open_library(settings) as lib:
        try:
            report = update_map(lib, refit=refit, method=method)
        except (LayoutError, MapBusy) as e:
            raise click.ClickException(str(e)) from None
    click.echo(f"{report.summary()} -> {settings.library}")


COMMANDS = [map_command]
