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

HASH_SIDE = 64  # PDQ's own working size: every hash is taken of a 64 x 64 copy
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


# PDQ of a 64 x 64 image, as numpy: there PDQ's Jarosz filter and decimation to 64 x 64 are the
# identity, so the hash is the median threshold of the 16 x 16 DCT (without the DC row and column) of
# the luma, bits in pdqhash's order; equal to pdqhash.compute bit for bit (tests), and 13 at once in
# a few matrix products instead of 13 calls. Turning the image by 90 degrees transposes the
# coefficients and flips the signs of the odd ones, so the turns cost no DCT at all.
_DCT = np.array([[np.sqrt(2 / 64) * np.cos(np.pi / 128 * (i + 1) * (2 * j + 1)) for j in range(64)]
                 for i in range(16)], dtype=np.float32)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_SIGNS = np.array([(-1) ** (i + 1) for i in range(16)], dtype=np.float32)


def _dct(rgb64: npt.NDArray) -> npt.NDArray[np.float32]:
    """PDQ's 16 x 16 DCT coefficients of each of [n, 64, 64, 3] RGB images."""
    return _dct_luma(rgb64.astype(np.float32) @ _LUMA)


def _dct_luma(luma64: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """PDQ's 16 x 16 DCT coefficients of each of [n, 64, 64] luma images."""
    return np.asarray(_DCT @ luma64 @ _DCT.T, dtype=np.float32)


def _packed(coefficients: npt.NDArray[np.float32]) -> bytes:
    """The packed PDQ hashes of [n, 16, 16] coefficients, one after another."""
    flat = coefficients.reshape(len(coefficients), -1)
    return np.packbits((flat > np.median(flat, axis=1, keepdims=True))[:, ::-1], axis=1).tobytes()


def turn_hashes(small: npt.NDArray) -> bytes:
    """PDQ hashes of a (64 x 64) RGB copy turned by each of TURNS (counter-clockwise), packed one
    after another."""
    b = _dct(small[None])[0]
    turned = {90: _SIGNS[:, None] * b.T, 180: _SIGNS[:, None] * b * _SIGNS[None, :], 270: b.T * _SIGNS[None, :]}
    return _packed(np.stack([turned[t] for t in TURNS]))


def region_hashes(thumb: npt.NDArray) -> bytes:
    """PDQ hashes of the REGIONS of an RGB copy of the photo (longer side 128-255 px), packed.

    Each region is resized to 64 x 64 as the whole photo is for its own hash, but in luma (one
    channel, not three): the hashes are pdqhash's up to the rounding of the colour channels (tests)."""
    import cv2

    luma = np.ascontiguousarray(thumb.astype(np.float32) @ _LUMA)
    h, w = luma.shape
    parts = [cv2.resize(luma[_span(top, bottom, h), _span(left, right, w)], (HASH_SIDE, HASH_SIDE),
                        interpolation=cv2.INTER_AREA)
             for left, top, right, bottom in REGIONS]
    return _packed(_dct_luma(np.stack(parts)))


def _span(start: float, end: float, size: int) -> slice:
    """The pixels from share `start` to share `end` of `size`: at least one, even in a photo one or
    two pixels thin, where rounding would leave a region empty."""
    first = min(int(start * size), size - 1)
    return slice(first, max(first + 1, round(end * size)))


def compute_features(img: Image.Image, small: npt.NDArray, thumb: npt.NDArray) -> ImageFeatures:
    """The features of an upright RGB photo, `small` being its 64 x 64 copy the PDQ hash was taken of
    and `thumb` the larger copy it was reduced from."""
    return ImageFeatures(gray_jpeg(img), turn_hashes(small), region_hashes(thumb))
