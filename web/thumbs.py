"""Thumbnails made on demand from the originals and cached as JPEG files under the library."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from indexer.imageio import ImageError, load_image
from indexer.scan import OutsideRoot, open_inside
from indexer.schema import Image
from search.searcher import ImageRow

# Longest side in pixels. "small" fills a grid cell on a 2x screen, "large" the photo page.
SIZES = {"small": 360, "large": 1600}
QUALITY = {"small": 80, "large": 88}


def original_path(root: Path, rel: str) -> Path:
    """The regular file a stored relative path names, resolved, which must lie inside `root`.

    Raises OutsideRoot for a path that leaves the root as written (absolute paths, '..': a
    tampered or foreign database) or once its symlinks are followed (a link swapped in after
    indexing), and for anything but a regular file; FileNotFoundError when the file is gone.
    """
    root = Path(os.path.abspath(root))
    if not rel or "\x00" in rel:
        raise OutsideRoot(rel)
    path = Path(os.path.normpath(root / rel))
    if not path.is_relative_to(root) or path == root:
        raise OutsideRoot(rel)
    return open_inside(root, path)


def version_of(row: Image | ImageRow) -> str:
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

        Raises OutsideRoot, indexer.imageio.ImageError (gone or undecodable), KeyError (unknown size).
        """
        side = SIZES[size]
        target = self.path(row, size)
        if target.exists():
            return target
        try:
            original = original_path(root, row.path)
        except FileNotFoundError as e:
            raise ImageError("missing file", str(e)) from None
        except PermissionError as e:
            raise ImageError("unreadable file", str(e)) from None
        img, _ = load_image(original, min_side=side)  # upright RGB
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
