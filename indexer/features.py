"""Per-image verification signals computed while indexing, so `lookalike duplicates` never decodes a
photo again: a small grayscale JPEG of the whole photo (FEATURE_SIDE px on its longer side: what
search/duplicates/verify.py matches keypoints and compares edges on) the PDQ hashes of the photo
turned by 90, 180 and 270 degrees (a copy whose EXIF orientation was lost meets its original there),
and those of ten regions (a heavy crop meets its original there).

About 10-15 kB and a millisecond per photo.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image

FEATURE_SIDE = 320  # longer side of the stored grayscale copy (search.duplicates.verify.VERIFY_SIDE)
FEATURE_QUALITY = 90  # its JPEG quality: keypoints survive it, and it stays near 12 kB
TURNS = (90, 180, 270)  # degrees counter-clockwise, in the order the turn hashes are stored
# Regions whose PDQ hashes are stored too, as (left, top, right, bottom) shares of the photo: a heavy
# crop of the photo meets its original there (the centre and corners at half and 70 % of each side).
REGIONS = (
    (0.25, 0.25, 0.75, 0.75), (0.0, 0.0, 0.5, 0.5), (0.5, 0.0, 1.0, 0.5), (0.0, 0.5, 0.5, 1.0), (0.5, 0.5, 1.0, 1.0),
    (0.15, 0.15, 0.85, 0.85), (0.0, 0.0, 0.7, 0.7), (0.3, 0.0, 1.0, 0.7), (0.0, 0.3, 0.7, 1.0), (0.3, 0.3, 1.0, 1.0),
)


@dataclass(frozen=True)
class ImageFeatures:
    gray: bytes  # JPEG, grayscale, longer side at most FEATURE_SIDE
    turns: bytes  # the packed PDQ hashes of the photo turned by TURNS, one after another
    regions: bytes  # the packed PDQ hashes of its REGIONS, one after another


def gray_jpeg(img: Image.Image) -> bytes:
    """The stored grayscale copy of an upright photo (never scaled up)."""
    gray = img.convert("L")
    if max(gray.size) > FEATURE_SIDE:
        factor = max(1, max(gray.size) // (2 * FEATURE_SIDE))  # a cheap box reduction first ...
        if factor > 1:
            gray = gray.reduce(factor)
        scale = FEATURE_SIDE / max(gray.size)  # ... then an exact resize
        gray = gray.resize((max(1, round(gray.width * scale)), max(1, round(gray.height * scale))),
                           Image.Resampling.BILINEAR, reducing_gap=2.0)
    buf = io.BytesIO()
    gray.save(buf, "JPEG", quality=FEATURE_QUALITY)
    return buf.getvalue()


def turn_hashes(small: npt.NDArray) -> bytes:
    """PDQ hashes of a (64 x 64) RGB copy turned by each of TURNS, packed one after another."""
    import pdqhash

    return b"".join(np.packbits(pdqhash.compute(np.ascontiguousarray(np.rot90(small, k=t // 90)))[0]).tobytes()
                    for t in TURNS)


def region_hashes(thumb: npt.NDArray) -> bytes:
    """PDQ hashes of the REGIONS of an RGB copy of the photo (longer side 128-255 px), packed."""
    import cv2
    import pdqhash

    h, w = thumb.shape[:2]
    out = []
    for left, top, right, bottom in REGIONS:
        part = thumb[_span(top, bottom, h), _span(left, right, w)]
        small = cv2.resize(part, (64, 64), interpolation=cv2.INTER_AREA)
        out.append(np.packbits(pdqhash.compute(small)[0]).tobytes())
    return b"".join(out)


def _span(start: float, end: float, size: int) -> slice:
    """The pixels from share `start` to share `end` of `size`: at least one, even in a photo one or
    two pixels thin, where rounding would leave a region empty."""
    first = min(int(start * size), size - 1)
    return slice(first, max(first + 1, round(end * size)))


def compute_features(img: Image.Image, small: npt.NDArray, thumb: npt.NDArray) -> ImageFeatures:
    """The features of an upright RGB photo, `small` being its 64 x 64 copy the PDQ hash was taken of
    and `thumb` the larger copy it was reduced from."""
    return ImageFeatures(gray_jpeg(img), turn_hashes(small), region_hashes(thumb))
