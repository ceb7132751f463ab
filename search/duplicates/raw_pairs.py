"""RAW+JPEG pairs: a camera RAW and the photo the camera wrote beside it (IMG_0001.CR2 and
IMG_0001.JPG: one folder, one name, another extension) are one shot, so the copies tier groups them
whatever their pixels say (the camera's JPEG is edited: white balance, curve, crop, sharpening).
Unless their capture times or cameras, where both files have them, say otherwise: a camera's file
counter wraps at 9999, so IMG_0001.CR2 of one year and IMG_0001.JPG of another are two shots."""

from __future__ import annotations

import posixpath
from datetime import datetime

from sqlalchemy import select

from indexer.imageio import is_raw
from indexer.library import Library
from indexer.schema import INDEXED, Image

SAME_SHOT_SECONDS = 2  # a RAW and its JPEG carry one capture time; a second or two apart at most
WHY = "RAW and the camera's JPEG of one shot (one folder, one name)"


def raw_pairs(library: Library) -> list[tuple[int, int]]:
    """(a, b) with a < b: each indexed RAW with each indexed non-RAW photo of its folder and name
    (the name compared without case: IMG_0001.CR2 and IMG_0001.jpg are a pair), unless `same_shot`
    says they are two shots."""
    Shot = tuple[int, datetime | None, str | None]
    shots: dict[tuple[str, str], tuple[list[Shot], list[Shot]]] = {}
    with library.Session() as s:
        query = select(Image.id, Image.path, Image.taken_at, Image.camera).where(Image.status == INDEXED)
        for image_id, path, taken_at, camera in s.execute(query):
            stem = posixpath.splitext(path)[0].lower()
            raws, others = shots.setdefault((posixpath.dirname(path), stem), ([], []))
            (raws if is_raw(path) else others).append((int(image_id), taken_at, camera))
    return sorted(
        (min(r[0], o[0]), max(r[0], o[0])) for raws, others in shots.values() for r in raws for o in others
        if same_shot(r[1:], o[1:])
    )


def same_shot(a: tuple[datetime | None, str | None], b: tuple[datetime | None, str | None]) -> bool:
    """Whether two files of one name can be one shot: capture times within SAME_SHOT_SECONDS and one
    camera, each compared only where both files have it (a JPEG exported without EXIF still pairs)."""
    (time_a, camera_a), (time_b, camera_b) = a, b
    if time_a is not None and time_b is not None and abs((time_a - time_b).total_seconds()) > SAME_SHOT_SECONDS:
        return False
    return camera_a is None or camera_b is None or camera_a == camera_b
