"""Libraries made without running the model: real schema, rows inserted directly, given vectors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from sqlalchemy import insert

from indexer.backbone import Backbone
from indexer.library import Library
from indexer.schema import INDEXED, Embedding, Image, utcnow

CHUNK = 20_000


def random_unit(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, dim), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def fill_library(
    path: Path,
    root: Path,
    files: list[tuple[str, int, float]],
    backbone: Backbone,
    vectors: Callable[[int, int], np.ndarray],
) -> Library:
    """A new library at `path` for `root` whose indexed rows are `files` (path, size, mtime).

    `vectors(start, count)` gives the unit vectors of rows start..start+count; ids are 1..n.
    The caller builds the FAISS file and closes the library.
    """
    library = Library(path, create=True)
    with library.Session.begin() as s:
        library.set_meta(s, root=str(Path(root).resolve()), **backbone.identity())
    now = utcnow()
    for start in range(0, len(files), CHUNK):
        part = files[start : start + CHUNK]
        vecs = vectors(start, len(part))
        with library.Session.begin() as s:
            s.execute(
                insert(Image),
                [
                    dict(id=start + i + 1, path=rel, folder=rel.rsplit("/", 1)[0] if "/" in rel else "",
                         size=size, mtime=mtime, hash=f"{start + i:032x}", width=400, height=533,
                         format="JPEG", status=INDEXED, added_at=now, indexed_at=now)
                    for i, (rel, size, mtime) in enumerate(part)
                ],
            )
            s.execute(
                insert(Embedding),
                [dict(image_id=start + i + 1, vector=v.tobytes()) for i, v in enumerate(vecs)],
            )
    return library
