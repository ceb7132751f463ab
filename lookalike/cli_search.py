"""The search command: images most like a query (an id, a path in the library, any image file)."""

from __future__ import annotations

from pathlib import Path

import click

from lookalike.options import echo_json, library_option, open_library, setting_type, settings_from


def resolve_query(library, query: str) -> int | Path:
    """An image id for an id or a path in the library; a Path for any other image file."""
    from sqlalchemy import select

    from indexer.schema import Image

    with library.Session() as s:
        # An id is a 64-bit SQLite integer: a longer number can only be a file name.
        if query.isdigit() and len(query) <= 19 and int(query) < 2**63 and s.get(Image, int(query)) is not None:
            return int(query)
        candidates = [query.replace("\\", "/").removeprefix("./")]
        root = library.root
        path = Path(query).expanduser()
        try:
            exists, is_file = path.exists(), path.is_file()
        except OSError:  # a name too long for the file system, say: no such file
            exists = is_file = False
        if root is not None and exists:
            try:
                candidates.append(path.resolve().relative_to(root).as_posix())
            except ValueError:
                pass
        for rel in candidates:
            if not rel.isprintable() and not _is_utf8(rel):
                continue  # a file name that is not UTF-8 is in no library (SQLite's text is): the file itself
            image_id = s.scalar(select(Image.id).where(Image.path == rel))
            if image_id is not None:
                return int(image_id)
    if is_file:
        return path
    raise click.ClickException(
        f"{query!r} is not an image id, a path in the library ({root}) or an image file"
    )


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # surrogate escapes: bytes of a name that is not UTF-8
        return False
    return True


def query_image(path: Path):
    """A query file's bytes, or for a camera RAW (known by its extension only) its decoded picture."""
    from indexer.imageio import is_raw, load_image

    if is_raw(path):
        return load_image(path)[0]
    return path.read_bytes()


@click.command()
@click.argument("query")
@library_option
@click.option("-k", type=setting_type("k"), default=None, help="How many neighbours [20].")
@click.option(
    "--json", "as_json", is_flag=True, help="Print a JSON list of {id, path, score, label}."
)
def search(query, library, k, as_json):
    """Images most like QUERY: an image id, a path in the library, or any image file."""
    from indexer.engines import EngineError
    from indexer.imageio import ImageError
    from indexer.library import LibraryError
    from search.searcher import NotFound, Searcher

    settings = settings_from(library=library, k=k)
    try:
        with open_library(settings) as lib:
            searcher = Searcher(lib, settings=settings)
            target = resolve_query(lib, query)
            if isinstance(target, int):
                hits = searcher.by_id(target, settings.k)
            else:
                hits = searcher.by_image(query_image(target), settings.k)
            with lib.Session() as s:
                rows = [
                    {
                        "id": row.id,
                        "path": row.path,
                        "score": round(score, 4),
                        "label": row.label.label if row.label else None,
                    }
                    for row, score in searcher.fetch(s, hits)
                ]
    except (NotFound, ImageError, LibraryError, EngineError, OSError) as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        echo_json(rows)
        return
    for r in rows:
        click.echo(
            f"{r['score']:.3f}  {r['id']:>7}  {r['path']}"
            + (f"  [{r['label']}]" if r["label"] else "")
        )


COMMANDS = [search]
