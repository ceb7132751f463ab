"""RAW+JPEG pairs: a camera RAW and the photo the camera wrote beside it (IMG_0001.CR2 and
IMG_0001.JPG: one folder, one name, another extension) are one shot, so the copies tier groups them
whatever their pixels say (the camera's JPEG is edited: white balance, curve, crop, sharpening)."""

from __future__ import annotations

import posixpath

from sqlalchemy import select

from indexer.imageio import is_raw
from indexer.library import Library
from indexer.schema import INDEXED, Image


def raw_pairs(library: Library) -> list[tuple[int, int]]:
    """(a, b) with a < b: each indexed RAW with each indexed non-RAW photo of its folder and name
    (the name compared without case: IMG_0001.CR2 and IMG_0001.jpg are a pair)."""
    shots: dict[tuple[str, str], tuple[list[int], list[int]]] = {}
    with library.Session() as s:
        for image_id, path in s.execute(select(Image.id, Image.path).where(Image.status == INDEXED)):
            stem = posixpath.splitext(path)[0].lower()
            raws, others = shots.setdefault((posixpath.dirname(path), stem), ([], []))
            (raws if is_raw(path) else others).append(int(image_id))
    return sorted(
        (min(r, o), max(r, o)) for raws, others in shots.values() for r in raws for o in others
    )
