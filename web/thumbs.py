"""Thumbnails made on demand from the originals and cached as JPEG files under the library.

A photo whose pixels would take more than an upload may (web/uploads.py: a 100-MP PNG is ~2 GB to
decode and convert) is decoded in the uploads' decode slot, one at a time: a page of such photos
cannot take a peak per server thread.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
from pathlib import Path

from PIL import Image as PILImage

from indexer.imageio import TOO_LARGE, ImageError, load_image
from indexer.rows import MISSING, UNREADABLE
from indexer.scan import OutsideRoot, open_inside
from indexer.schema import Image
from search.searcher import ImageRow
from web.uploads import MAX_DECODED_BYTES, decode_slot

log = logging.getLogger(__name__)

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


def is_whole_jpeg(path: Path) -> bool:
    """Whether `path` is a file that starts and ends as a JPEG does: a cached thumbnail to serve.

    Two small reads, not a decode: catches a folder in its place, an empty, truncated or foreign file.
    """
    try:
        with open(path, "rb") as f:
            if f.read(3) != b"\xff\xd8\xff":
                return False
            f.seek(-2, os.SEEK_END)
            return f.read(2) == b"\xff\xd9"
    except OSError:  # missing, a folder, unreadable, or too short to seek back 2 bytes
        return False


class Thumbnails:
    """A folder of `<size>/<id>-<version>.jpg` files, written atomically.

    The folder is derived data: a cached file that is damaged is made again, and where no file can
    be written (the folder is a file, a folder stands where the thumbnail goes, a read-only or
    full disk) the thumbnail is served from memory.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._warned = False

    def path(self, row: Image, size: str) -> Path:
        return self.folder / size / f"{row.id}-{version_of(row)}.jpg"

    def get(self, root: Path, row: Image, size: str) -> Path | io.BytesIO:
        """The cached thumbnail, made now if missing or damaged; made in memory if it cannot be cached.

        Raises OutsideRoot, indexer.imageio.ImageError (gone or undecodable), KeyError (unknown size).
        """
        target = self.path(row, size)
        if is_whole_jpeg(target):
            return target
        data = self._make(root, row, size)
        try:
            self._write(target, data)
        except OSError as e:
            if not self._warned:  # once: every thumbnail of every page would say the same
                log.warning("thumbnails are not cached, but made for each request: %s", e)
                self._warned = True
            return io.BytesIO(data)
        return target

    def _make(self, root: Path, row: Image, size: str) -> bytes:
        side = SIZES[size]
        try:
            original = original_path(root, row.path)
        except FileNotFoundError as e:
            raise ImageError(MISSING, str(e)) from None
        except OSError as e:  # unreadable, or its path runs through a file or a link loop (ENOTDIR, ELOOP)
            raise ImageError(UNREADABLE, str(e)) from None
        try:
            return render(load_image(original, min_side=side, max_bytes=MAX_DECODED_BYTES)[0], size)
        except ImageError as e:
            if e.reason != TOO_LARGE:
                raise
        with decode_slot():  # large pixels: one decode at a time (503 when the slot stays taken)
            return render(load_image(original, min_side=side)[0], size)

    def _write(self, target: Path, data: bytes) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        # Two requests may make the same thumbnail at once: each writes its own temporary file.
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, target)  # over a damaged file; a folder in its place refuses
        except BaseException:
            os.unlink(tmp)
            raise


def render(img: PILImage.Image, size: str) -> bytes:
    """An upright RGB image as the JPEG thumbnail of `size`."""
    side = SIZES[size]
    img.thumbnail((side, side))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=QUALITY[size], optimize=True, progressive=size == "large")
    return buf.getvalue()
