"""Decoding uploaded photos with bounded memory: a cap on each image's pixels, few at once.

A 418 KB PNG can hold 10000 x 9999 RGBA pixels: under Pillow's bomb limit (the indexer's, 100 MP),
yet ~2.5 GB to decode and convert. An upload is refused (413) when its decoded pixels would
take more than MAX_DECODED_BYTES, judged from its header after reduced-scale decoding (JPEGs),
and DECODE_SLOTS uploads (one) are decoded and embedded at a time; the others wait their turn.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from flask import abort
from PIL import Image as PILImage

from indexer.imageio import TOO_LARGE, ImageError, PhotoInfo, load_image

# 24 MP at 4 bytes a pixel (Pillow keeps RGB in 4): a quarter of what the indexer decodes, enough
# for any JPEG (decoded at 1/8 scale when large) and for PNG/WebP/HEIC photos up to 24 MP.
MAX_DECODED_BYTES = 96 * 2**20
# One at a time: queries are embedded one at a time anyway (Searcher), and a second decode would
# double the peak memory for little gain.
DECODE_SLOTS = 1
WAIT_SECONDS = 60  # longer than a queue of uploads takes; beyond it the server is overloaded (503)

_slots = threading.BoundedSemaphore(DECODE_SLOTS)  # per process: memory is per process


def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: its allocator may keep less anyway
        return None


_trim = _malloc_trim()


def give_back_memory() -> None:
    """Return freed memory to the system (glibc). Pillow allocates decoded pixels in 16 MB blocks,
    which glibc serves from the decoding thread's own arena and keeps there once freed: without
    this, every server thread would hold on to the peak of the largest upload it ever decoded, and
    one decode at a time would still add up to one peak per thread."""
    if _trim is not None:
        _trim(0)


@contextmanager
def decode_slot() -> Iterator[None]:
    """Hold one of the DECODE_SLOTS while an upload is decoded and embedded.

    :raise 503: no slot freed within WAIT_SECONDS.
    """
    if not _slots.acquire(timeout=WAIT_SECONDS):
        abort(503, description="too many photos are being searched at once: try again in a moment")
    try:
        yield
    finally:
        give_back_memory()
        _slots.release()


def decode_upload(data: bytes, min_side: int) -> tuple[PILImage.Image, PhotoInfo]:
    """An upload as an upright RGB image (call inside `decode_slot`).

    :raise 413: its pixels would take more than MAX_DECODED_BYTES. :raise 400: not a usable image.
    """
    try:
        return load_image(data, min_side=min_side, max_bytes=MAX_DECODED_BYTES)
    except ImageError as e:
        if e.reason == TOO_LARGE:
            abort(413, description=f"the photo is too large to search by: {e.detail}")
        abort(400, description=f"not a usable image: {e}")
