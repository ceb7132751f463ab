"""Decoding photos: any file or upload becomes an upright RGB PIL image, or an ImageError with a reason."""

from __future__ import annotations

import importlib.util
import io
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from indexer.extensions import EXTENSIONS, RAW_EXTENSIONS  # noqa: F401  (re-exported: the scan's file types)
from indexer.rows import MISSING, UNREADABLE

try:  # HEIC/HEIF from phones; optional at run time, a declared dependency.
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:  # pragma: no cover
    pass

# Photos up to ~100 MP decode; beyond that a file is treated as a decompression bomb. Judged by
# `load_image` on the size it decodes at, not by Pillow at open: a 108 MP phone JPEG decodes at 1/8.
MAX_PIXELS = 100_000_000
Image.MAX_IMAGE_PIXELS = None
# A file over this is refused by its size once its header is read, before the rest is: the largest
# photo MAX_PIXELS allows, uncompressed 16-bit RGBA (800 MB), still fits with its metadata.
MAX_FILE_BYTES = 1 << 30
logging.getLogger("PIL").setLevel(logging.CRITICAL)  # decoder chatter; failures are recorded instead


def _silence_libtiff() -> None:
    """Stop libtiff printing its own errors and warnings on stderr (through the progress bar).

    Pillow reports a failed TIFF decode as an exception, which becomes the file's recorded reason;
    libtiff's global handlers would also print "TIFFFillStrip: Read error on strip 0 ..." straight
    to file descriptor 2. Linux: the libtiff Pillow loaded is found in /proc/self/maps.
    """
    import ctypes

    from PIL import _imaging  # noqa: F401 - loads the libtiff Pillow links against

    try:
        with open("/proc/self/maps") as maps:
            path = next((line.split()[-1] for line in maps if "/libtiff" in line), None)
        if path is None:
            return
        libtiff = ctypes.CDLL(path)
        for setter in (libtiff.TIFFSetErrorHandler, libtiff.TIFFSetWarningHandler):
            setter.argtypes, setter.restype = [ctypes.c_void_p], ctypes.c_void_p
            setter(None)
    except (OSError, AttributeError):  # not Linux, or a libtiff without these: only the noise stays
        return


_silence_libtiff()
ImageFile.LOAD_TRUNCATED_IMAGES = False


# How RAW files start: TIFF (DNG, CR2, NEF, ARW, PEF, SRW, ...), Olympus ORF, Panasonic RW2, Fujifilm
# RAF; Canon CR3 is an ISO media file with brand "crx " at offset 4.
RAW_SIGNATURES = (b"II*\x00", b"MM\x00*", b"IIRO", b"IIRS", b"MMOR", b"IIU\x00", b"FUJIFILMCCD-RAW")


def is_raw(path: str | Path) -> bool:
    """Whether a file name has a camera RAW extension."""
    return os.path.splitext(str(path))[1].lower() in RAW_EXTENSIONS

_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL = 0x9003
_DATETIME = 0x0132
_MAKE = 0x010F
_MODEL = 0x0110
_ORIENTATION = 0x0112


TOO_LARGE = "too large to decode"  # ImageError.reason of a file over MAX_FILE_BYTES, pixels over max_bytes


class ImageError(Exception):
    """An image that cannot be used. `reason` is a short category, `str(err)` is 'reason: detail'."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass(frozen=True)
class PhotoInfo:
    """What a photo says about itself, read while decoding it."""

    width: int  # as displayed, after EXIF orientation
    height: int
    format: str | None
    taken_at: datetime | None
    camera: str | None


def _exif_facts(img: Image.Image) -> tuple[int, datetime | None, str | None]:
    try:
        exif = img.getexif()
    except Exception:  # broken EXIF never makes a photo unreadable
        return 1, None, None
    orientation = exif.get(_ORIENTATION, 1)
    try:
        sub = exif.get_ifd(_EXIF_IFD)
    except Exception:
        sub = {}
    taken_at = None
    for raw in (sub.get(_DATETIME_ORIGINAL), exif.get(_DATETIME)):
        if isinstance(raw, str):
            try:
                taken_at = datetime.strptime(raw.strip("\x00 ")[:19], "%Y:%m:%d %H:%M:%S")
                break
            except ValueError:
                continue
    camera = camera_name(str(exif.get(_MAKE, "")), str(exif.get(_MODEL, "")))
    return orientation if isinstance(orientation, int) else 1, taken_at, camera


def camera_name(make: str, model: str) -> str | None:
    """The camera as one name from EXIF Make and Model; None when both are empty."""
    make, model = make.strip("\x00 "), model.strip("\x00 ")
    if make and model.lower().startswith(make.lower()):
        make = ""  # "Canon Canon EOS 5D" -> "Canon EOS 5D"
    return " ".join(p for p in (make, model) if p) or None


# Pillow modes of more than 8 bits a channel, and those its `reduce` takes.
HIGH_DEPTH = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
REDUCIBLE = ("L", "LA", "RGB", "RGBA", "CMYK")
GRAY_ROWS = 256  # rows of a high-depth image scaled to 8 bits at a time


def to_rgb(img: Image.Image, min_side: int | None = None) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency is composited over white.

    With `min_side`, an image whose shorter side is at least twice that is first reduced by a whole
    factor in its own mode (a box filter; Pillow's `reduce`), keeping the shorter side at least
    `min_side`, as a JPEG is decoded at a reduced scale (`load_image`). The RGB copy of a large gray
    or 16-bit image is then small, and decoding one takes little more memory than its own pixels
    (`decoded_bytes`).
    """
    if img.mode in HIGH_DEPTH:
        img = _gray8(img)
    if min_side and img.mode in REDUCIBLE and min(img.size) >= 2 * min_side:
        img = img.reduce(min(img.size) // min_side)
    if img.mode == "RGB":
        return img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img).convert("RGB")
    if img.mode in ("LAB", "HSV"):
        return img.convert("RGB") if img.mode == "HSV" else Image.fromarray(
            np.asarray(img)[..., 0], "L"
        ).convert("RGB")
    return img.convert("RGB")


def _gray8(img: Image.Image) -> Image.Image:
    """A high-depth image as 8-bit gray, its actual range scaled to 0..255 (rather than clipped at
    255), a band of rows at a time: never a float copy of the whole image."""
    w, h = img.size

    def bands() -> Iterator[tuple[int, npt.NDArray[np.float32]]]:
        for top in range(0, h, GRAY_ROWS):
            yield top, np.asarray(img.crop((0, top, w, min(h, top + GRAY_ROWS))), dtype=np.float32)

    ranges = []
    for _, band in bands():
        finite = band[np.isfinite(band)]  # a float image's NaN or inf are no range
        if finite.size:
            ranges.append((float(finite.min()), float(finite.max())))
    lo, hi = (min(r[0] for r in ranges), max(r[1] for r in ranges)) if ranges else (0.0, 0.0)
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    out = np.empty((h, w), dtype=np.uint8)
    for top, band in bands():
        band = np.nan_to_num(band, nan=lo, posinf=hi, neginf=lo)
        out[top : top + GRAY_ROWS] = (band - lo) * scale  # truncated to uint8, as astype does
    return Image.fromarray(out, "L")


# Bytes per pixel of Pillow's decoded buffer by mode; every other mode takes 4 (RGB included).
BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}


def decoded_bytes(img: Image.Image, min_side: int | None = None) -> int:
    """What decoding `img` at its current (possibly drafted) size and making it RGB (`to_rgb`, with
    this `min_side`) will allocate at the peak: its own pixels, the 8-bit copy of a high-depth
    image, and the RGB copy of any other mode, made after the reduction where `to_rgb` reduces."""
    w, h = img.size
    own = w * h * BYTES_PER_PIXEL.get(img.mode, 4)
    if img.mode == "RGB":
        return own
    high_depth = img.mode in HIGH_DEPTH
    factor = min(w, h) // min_side if min_side and min(w, h) >= 2 * min_side else 1
    if not (high_depth or img.mode in REDUCIBLE):
        factor = 1  # Pillow cannot reduce a palette or 1-bit image: its RGB copy is full size
    return own + (w * h if high_depth else 0) + (w // factor) * (h // factor) * 4


class _InMemory(io.BytesIO):
    """Bytes handed to Pillow, named as such in its messages, not as '<_io.BytesIO object at 0x...>'."""

    def __repr__(self) -> str:
        return f"<{len(self.getbuffer())} bytes>"


def _open(source: Path | bytes) -> Image.Image:
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageError("empty file", "0 bytes")
        return Image.open(_InMemory(source))
    size = source.stat().st_size
    if size == 0:
        raise ImageError("empty file", "0 bytes")
    img = Image.open(source)  # reads the header only: a file that is no image fails here, unread
    if size > MAX_FILE_BYTES:
        img.close()
        raise ImageError(TOO_LARGE, f"a {size / 2**30:.2f} GiB file, over the {MAX_FILE_BYTES / 2**30:.2f} GiB allowed")
    return img


def load_image(
    source: Path | bytes, min_side: int | None = None, *, max_bytes: int | None = None
) -> tuple[Image.Image, PhotoInfo]:
    """Decode a file or in-memory bytes into an upright RGB image and its facts.

    With `min_side`, JPEGs are decoded at a reduced scale (Pillow's `draft`) as long as the shorter
    side stays at least `min_side`: a 12 MP photo then decodes about 8x faster.
    With `max_bytes`, an image whose pixels would take more than that once decoded (after any
    reduced-scale decoding; `decoded_bytes`) is refused before a byte is decoded: ImageError
    with reason TOO_LARGE.
    A file is read as Pillow needs it, never whole: one that is not an image fails on its header,
    and one over MAX_FILE_BYTES is TOO_LARGE.
    A camera RAW file (by its extension, indexer/raw.py) is decoded by LibRaw: its embedded preview
    or a half-size demosaic; so are bytes Pillow does not know that LibRaw does (an uploaded RAW).
    Raises ImageError for anything that is not a usable image; never anything else.
    """
    if isinstance(source, Path) and is_raw(source):
        from indexer.raw import UNSUPPORTED_RAW, load_raw

        try:
            return load_raw(source, min_side, max_bytes=max_bytes)
        except ImageError as e:  # a JPEG or PNG named .CR2 (a renamed export): decoded as what it is
            if e.reason != UNSUPPORTED_RAW or _starts_like_raw(source):
                raise
    opened: Image.Image | None = None
    result: Image.Image | None = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about every odd tag; we report real errors
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = opened = _open(source)
            fmt = img.format
            width, height = img.size
            if width < 1 or height < 1:
                raise ImageError("degenerate image", f"{width}x{height} pixels")
            if min_side and fmt in ("JPEG", "MPO"):  # MPO: a camera JPEG with a second picture in it
                if min(img.size) >= 2 * min_side:
                    # Pillow picks the largest of 1/2, 1/4, 1/8 that keeps both sides >= these.
                    img.draft("RGB", (min_side, min_side))
            check_pixels(img)
            # Before anything reads pixels: a PNG's getexif() decodes the whole image.
            if max_bytes is not None and (need := decoded_bytes(img, min_side)) > max_bytes:
                raise ImageError(
                    TOO_LARGE, f"{img.size[0]}x{img.size[1]} {img.mode} pixels take "
                    f"{need / 2**20:.0f} MiB decoded, over the {max_bytes / 2**20:.0f} MiB allowed"
                )
            _orientation, taken_at, camera = _exif_facts(img)
            if getattr(img, "is_animated", False):
                img.seek(0)  # first frame stands for an animation
            img.load()
            stored = img.size
            try:
                img = ImageOps.exif_transpose(img)
            except Exception:
                pass  # a broken orientation tag: keep the pixels as stored
            if img.size != stored:  # turned upright (a TIFF comes upright already: Pillow turns it)
                width, height = height, width
            img = to_rgb(img, min_side)
            result = img
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError("decompression bomb", str(e)) from None
    except UnidentifiedImageError as e:
        if not isinstance(source, Path):  # bytes Pillow does not know may be a RAW (an upload)
            return _raw_bytes(bytes(source), min_side, max_bytes, ImageError("not an image", str(e)))
        raise ImageError("not an image", str(e)) from None
    except FileNotFoundError as e:
        raise ImageError(MISSING, str(e)) from None
    except (OSError, SyntaxError, EOFError, ValueError, IndexError) as e:
        if isinstance(e, OSError) and e.errno is not None:  # the system's (EACCES, EIO): a later run retries
            raise ImageError(UNREADABLE, str(e)) from None
        # Pillow reports truncated and corrupt data as OSError (without an errno)/SyntaxError/ValueError.
        raise ImageError("corrupt image", f"{type(e).__name__}: {e}") from None
    except MemoryError:
        raise ImageError("decompression bomb", "ran out of memory while decoding") from None
    except Exception as e:  # a decoder bug must not stop a whole collection
        raise ImageError("corrupt image", f"{type(e).__name__}: {e}") from None
    finally:
        if opened is not None and opened is not result:
            opened.close()  # and its file, which a multi-frame image keeps open
    return img, PhotoInfo(width, height, fmt, taken_at, camera)


def check_pixels(img: Image.Image) -> None:
    """Refuse an image of more than MAX_PIXELS at the size it will decode at (after `draft`)."""
    w, h = img.size
    if w * h > MAX_PIXELS:
        raise ImageError("decompression bomb", f"{w}x{h} pixels, over the {MAX_PIXELS // 1_000_000} megapixels "
                                               "allowed")


def _starts_like_raw(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return True  # unreadable: LibRaw's own error stands
    return head.startswith(RAW_SIGNATURES) or head[4:12] == b"ftypcrx "


def _raw_bytes(data: bytes, min_side: int | None, max_bytes: int | None,
               not_image: ImageError) -> tuple[Image.Image, PhotoInfo]:
    """A RAW file's bytes decoded by LibRaw; `not_image` when they do not start as a RAW does or
    LibRaw does not know them (it would guess a headerless format from a length alone)."""
    looks_raw = data.startswith(RAW_SIGNATURES) or data[4:12] == b"ftypcrx "
    if not looks_raw or importlib.util.find_spec("rawpy") is None:
        raise not_image
    from indexer.raw import UNSUPPORTED_RAW, load_raw

    try:
        return load_raw(data, min_side, max_bytes=max_bytes)
    except ImageError as e:
        if e.reason == UNSUPPORTED_RAW:
            raise not_image from None
        raise
