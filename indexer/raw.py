"""Camera RAW files (LibRaw, through rawpy): the embedded JPEG preview when it is large enough, else a
half-size demosaic; dimensions and orientation from LibRaw, capture time and camera from the EXIF."""

from __future__ import annotations

import io
import logging
import multiprocessing
import os
import warnings
from pathlib import Path

from PIL import Image, ImageOps

from indexer.imageio import MAX_FILE_BYTES, TOO_LARGE, ImageError, PhotoInfo, check_pixels, decoded_bytes, to_rgb
from indexer.rows import MISSING, UNREADABLE

try:
    import rawpy
except ImportError:  # pragma: no cover - a declared dependency; without it RAW files are not scanned
    rawpy = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

# An embedded preview whose long side reaches this stands for the RAW: above the model's input and
# the small thumbnail, and what cameras embed (full size for Canon and Nikon, 1616 px for Sony).
# Smaller previews (160 px thumbnails) are not enough: the RAW is demosaiced at half size instead.
PREVIEW_MIN_LONG_SIDE = 1024
UNSUPPORTED_RAW = "unsupported RAW"  # ImageError.reason of a file LibRaw does not know
# LibRaw's `flip` (sizes.flip) -> the Pillow rotation that makes the picture upright.
_ROTATION = {3: Image.Transpose.ROTATE_180, 5: Image.Transpose.ROTATE_90, 6: Image.Transpose.ROTATE_270}


# LibRaw's demosaic runs OpenMP parallel regions, and GNU OpenMP is not fork-safe: a process forked
# after its thread pool exists (the parent demosaiced a RAW, or ran torch, whose libgomp LibRaw's
# calls bind to once torch is loaded) hangs in its first parallel region. Measured here: a forked
# child's half-size demosaic never returned. So in a multiprocessing child (DataLoader workers, the
# signal backfill's process pool) LibRaw runs on one thread, which needs no pool, as the workers'
# torch does (indexer/runners/local.py); rawpy's warning about it is then answered, and silenced.
_FORK_WARNING = "rawpy is being used in a process created by multiprocessing"


def _one_openmp_thread() -> None:
    """omp_set_num_threads(1) in this thread, in every OpenMP runtime LibRaw's calls may bind to:
    the one already loaded globally (torch's) and rawpy's own."""
    import ctypes
    import glob

    libraries: list[str | None] = [None]  # the global namespace
    libraries += glob.glob(os.path.join(os.path.dirname(os.path.dirname(rawpy.__file__)), "rawpy.libs", "libgomp*"))
    for name in libraries:
        try:
            ctypes.CDLL(name).omp_set_num_threads(1)
        except (OSError, AttributeError):
            continue


def raw_supported() -> bool:
    """Whether RAW files can be decoded here (rawpy imports)."""
    return rawpy is not None


def load_raw(source: Path | bytes, min_side: int | None = None, *,
             max_bytes: int | None = None) -> tuple[Image.Image, PhotoInfo]:
    """Decode a RAW file into an upright RGB image and its facts (`imageio.load_image`'s contract:
    with `min_side` a JPEG preview is decoded at a reduced scale keeping its shorter side >= it).

    PhotoInfo's width and height are the sensor image's, upright, whichever pixels stood for it.
    Raises ImageError: 'unsupported RAW' (LibRaw does not know the file), 'corrupt RAW' (it fails
    while reading), 'no RAW decoder' (rawpy is not installed), and load_image's other reasons.
    """
    from indexer.exiv2io import camera_facts  # exiv2 is imported only when a RAW is met

    if rawpy is None:
        raise ImageError("no RAW decoder", "rawpy is not installed (pip install rawpy)")
    try:
        size = source.stat().st_size if isinstance(source, Path) else len(source)
        if size == 0:
            raise ImageError("empty file", "0 bytes")
        if size > MAX_FILE_BYTES:
            raise ImageError(TOO_LARGE, f"a {size / 2**30:.2f} GiB file, over the {MAX_FILE_BYTES / 2**30:.2f} GiB "
                             "allowed")
        child = multiprocessing.parent_process() is not None
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", _FORK_WARNING, RuntimeWarning)
            opened = rawpy.imread(str(source) if isinstance(source, Path) else io.BytesIO(source))
        with opened as raw:
            sizes = raw.sizes
            width, height = sizes.width, sizes.height
            if width < 1 or height < 1:
                raise ImageError("degenerate image", f"{width}x{height} pixels")
            if sizes.flip & 4:  # LibRaw's flip: 4 swaps the axes (5, 6 turned; 4, 7 turned and mirrored)
                width, height = height, width
            img = _preview(raw, sizes, min_side, max_bytes)
            if img is None:
                need = demosaic_bytes(sizes)
                if max_bytes is not None and need > max_bytes:
                    raise ImageError(TOO_LARGE, f"{width}x{height} RAW takes {need / 2**20:.0f} MiB at half size, "
                                     f"over the {max_bytes / 2**20:.0f} MiB allowed")
                if child:
                    _one_openmp_thread()
                rgb = raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8)  # applies the flip
                img = Image.fromarray(rgb, "RGB")
    except ImageError:
        raise
    except FileNotFoundError as e:
        raise ImageError(MISSING, str(e)) from None
    except PermissionError as e:
        raise ImageError(UNREADABLE, str(e)) from None
    except rawpy.LibRawFileUnsupportedError as e:
        raise ImageError(UNSUPPORTED_RAW, f"LibRaw cannot read this file: {_text(e)}") from None
    except MemoryError:
        raise ImageError("decompression bomb", "ran out of memory while decoding") from None
    except Exception as e:  # LibRawIOError, LibRawDataError, a broken preview: never stop a collection
        raise ImageError("corrupt RAW", f"{type(e).__name__}: {_text(e)}") from None
    taken_at, camera = camera_facts(source)
    kind = source.suffix.lstrip(".").upper() if isinstance(source, Path) else "RAW"
    return img, PhotoInfo(width, height, kind, taken_at, camera)


def demosaic_bytes(sizes) -> int:
    """What a half-size demosaic allocates at its peak: LibRaw's unpacked sensor data (16 bits a
    photosite), its working image (4 channels of 16 bits a pixel, at half size), the 8-bit RGB it
    returns, and Pillow's copy (4 bytes a pixel). Measured: a 12 MP DNG grew the process by 78 MiB,
    this counts 66 MiB (the RGB output alone, counted before, was 11 MiB)."""
    half = (sizes.width // 2) * (sizes.height // 2)
    return sizes.raw_width * sizes.raw_height * 2 + half * (8 + 3 + 4)


def _preview(raw, sizes, min_side: int | None, max_bytes: int | None) -> Image.Image | None:
    """The embedded JPEG (or bitmap) preview, upright, if its long side reaches PREVIEW_MIN_LONG_SIDE."""
    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
        return None
    if thumb.format == rawpy.ThumbFormat.BITMAP:
        img = Image.fromarray(thumb.data, "RGB")
        if max(img.size) < PREVIEW_MIN_LONG_SIDE:
            return None
        exif_orientation = 1
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(thumb.data))
            if max(img.size) < PREVIEW_MIN_LONG_SIDE:
                return None
            if min_side and min(img.size) >= 2 * min_side:
                img.draft("RGB", (min_side, min_side))  # as load_image does for any JPEG
            check_pixels(img)
            if max_bytes is not None and decoded_bytes(img) > max_bytes:
                return None  # the half-size demosaic's own check decides
            exif_orientation = img.getexif().get(0x0112, 1)
            img.load()
    if exif_orientation not in (None, 1):
        img = ImageOps.exif_transpose(img)  # the preview says how it stands
    elif sizes.flip in _ROTATION and (img.width >= img.height) == (sizes.width >= sizes.height):
        img = img.transpose(_ROTATION[sizes.flip])  # stored as the sensor saw it: turn it as the RAW says
    return to_rgb(img)


def _text(e: Exception) -> str:
    text = str(e)
    return text[2:-1] if text.startswith(("b'", 'b"')) else text  # LibRaw's messages arrive as bytes
