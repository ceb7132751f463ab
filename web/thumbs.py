"""Thumbnails made on demand from the originals and cached as JPEG files under the library."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from indexer.imageio import load_image
from indexer.schema import Image

# Longest side in pixels. "small" fills a grid cell on a 2x screen, "large" the photo page.
SIZES = {"small": 360, "large": 1600}
QUALITY = {"small": 80, "large": 88}


class OutsideRoot(LookupError):
    """A stored path that would leave the collection root (a tampered or foreign database)."""


def original_path(root: Path, rel: str) -> Path:
    """The file of a stored relative path, which must name a place inside `root`.

    Raises OutsideRoot otherwise (absolute paths, '..'). The check is on the path as the scanner
    saw it, not on where symlinks lead: a symlinked folder the user put in the collection was
    indexed through the collection, and is served the same way.
    """
    root = Path(os.path.abspath(root))
    if not rel or "\x00" in rel:
        raise OutsideRoot(rel)
    path = Path(os.path.normpath(root / rel))
    if not path.is_relative_to(root) or path == root:
        raise OutsideRoot(rel)
    return path


def version_of(row: Image) -> str:
    """Changes whenever the file's content does: part of the cache file name and the ETag."""
    if row.hash:
        return row.hash[:16]
    return f"{row.size:x}-{int(row.mtime * 1000):x}"


class Thumbnails:
    """A folder of `<size>/<id>-<version>.jpg` files, written atomically."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path(self, row: Image, size: str) -> Path:
        return self.folder / size / f"{row.id}-{version_of(row)}.jpg"

    def get(self, root: Path, row: Image, size: str) -> Path:
        """The cached thumbnail, made now if missing.

        Raises OutsideRoot, indexer.imageio.ImageError (undecodable), KeyError (unknown size).
        """
        side = SIZES[size]
        target = self.path(row, size)
        if target.exists():
            return target
        img, _ = load_image(original_path(root, row.path), min_side=side)  # upright RGB
        img.thumbnail((side, side))
        target.parent.mkdir(parents=True, exist_ok=True)
        # Two requests may make the same thumbnail at once: each writes its own temporary file.
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                img.save(f, "JPEG", quality=QUALITY[size], optimize=True, progressive=size == "large")
            os.replace(tmp, target)
        except BaseException:
            os.unlink(tmp)
            raise
        return target
