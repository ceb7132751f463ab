"""Per-image verification signals computed while indexing, so `lookalike duplicates` never decodes a
photo again: a small grayscale JPEG of the whole photo (FEATURE_SIDE px on its longer side: what
search/duplicates/verify.py matches keypoints and compares edges on) and the PDQ hashes of the photo
turned by 90, 180 and 270 degrees (a copy whose EXIF orientation was lost meets its original there).

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


@dataclass(frozen=True)
class ImageFeatures:
    gray: bytes  # JPEG, grayscale, longer side at most FEATURE_SIDE
    turns: bytes  # the packed PDQ hashes of the photo turned by TURNS, one after another


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


def compute_features(img: Image.Image, small: npt.NDArray) -> ImageFeatures:
    """The features of an upright RGB photo, `small` being its 64 x 64 copy the PDQ hash was taken of."""
    return ImageFeatures(gray_jpeg(img), turn_hashes(small))
