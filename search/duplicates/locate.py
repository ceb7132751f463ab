"""Finding a heavy crop inside its original by its pixels, where keypoints are too few.

A quarter of a photo, stored at 320 px, shows its part of the original at twice the scale the
original's own 320-px copy has it, and a plain garment or a soft background gives ORB a handful of
corners there: keypoint verification (search/duplicates/verify.py) then has nothing to fit. When the
crop's whole PDQ hash nominated it as near one stored region of the other photo (or that region's
mirror image: indexer/features.py REGIONS, search/duplicates/candidates.py `region_pairs`), the crop
is searched for around that region instead: scaled to the region's size at a few scales, it is slid
over the region and its surroundings (normalised cross-correlation, OpenCV's template matching),
and at the best place the aligned edges are compared as for any other match (`verify.correlation`).
A crop is the same pixels as its place in the original, so nearly every cell lines up and the edges
correlate near 1; a look-alike's region, which the hash can also nominate, does not (`verify.judge`,
MIN_LOCATED_*).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from indexer.features import REGIONS
from search.duplicates.verify import Features, Match, correlation, judge, verify

LOCATE_MARGIN = 0.5  # the search reaches this share of the region's size beyond each of its sides
LOCATE_SCALES = 3  # scales tried on each side of the region's own, 2 ** (1/6) apart (up to 1.41 x)
LOCATE_MIN_SIDE = 16  # px: a smaller scaled crop says too little to be placed
LOCATE_BLUR = 1.0  # Gaussian sigma (px) both sides are smoothed with before they are slid over each other


class RegionHint(NamedTuple):
    """Which photo of a pair is near which stored region of the other, and whether mirrored."""

    crop_is_first: bool  # the pair's first photo is the crop, the second the one with the region
    region: int  # index in indexer/features.py REGIONS
    mirrored: bool  # the crop is the region's mirror image


def locate(crop: Features, whole: Features, region: int, mirrored: bool) -> Match:
    """The crop's best place near REGIONS[region] of the whole photo, judged by its aligned edges:
    a Match with no keypoints (inliers 0), transform "located" (or "mirrored located")."""
    import cv2

    a = np.ascontiguousarray(crop.gray[:, ::-1]) if mirrored else crop.gray
    b = whole.gray
    height, width = b.shape
    ah, aw = a.shape
    left, top, right, bottom = REGIONS[region]
    rw, rh = (right - left) * width, (bottom - top) * height
    x0, y0 = int(max(0, (left - LOCATE_MARGIN * (right - left)) * width)), int(
        max(0, (top - LOCATE_MARGIN * (bottom - top)) * height))
    x1, y1 = int(min(width, (right + LOCATE_MARGIN * (right - left)) * width + 1)), int(
        min(height, (bottom + LOCATE_MARGIN * (bottom - top)) * height + 1))
    window = _smooth(b[y0:y1, x0:x1])
    own = float(np.sqrt(rw * rh / (aw * ah)))  # the crop's scale if it were the region exactly
    best, transform = -2.0, None
    for step in range(-LOCATE_SCALES, LOCATE_SCALES + 1):
        scale = own * 2 ** (step / 6)
        tw, th = round(aw * scale), round(ah * scale)
        if min(tw, th) < LOCATE_MIN_SIDE or tw > window.shape[1] or th > window.shape[0]:
            continue
        template = _smooth(cv2.resize(a, (tw, th), interpolation=cv2.INTER_AREA))
        if float(template.std()) == 0.0:
            continue  # a plain crop matches anywhere equally: nothing to place
        _, score, _, (x, y) = cv2.minMaxLoc(cv2.matchTemplate(window, template, cv2.TM_CCOEFF_NORMED))
        if score > best:
            best = score
            transform = np.array([[tw / aw, 0, x0 + x], [0, th / ah, y0 + y], [0, 0, 1]], dtype=np.float64)
    if transform is None:
        return Match(0, 0.0)
    whole_corr, aligned, centre, exact = correlation(a, b, transform)
    prefix = "mirrored " if mirrored else ""
    return Match(0, whole_corr, aligned, centre, 0.0, prefix + "located", exact)


def _smooth(gray: npt.NDArray) -> npt.NDArray[np.float32]:
    import cv2

    return np.asarray(cv2.GaussianBlur(gray.astype(np.float32), (0, 0), LOCATE_BLUR), dtype=np.float32)


def verify_hinted(a: Features, b: Features, hint: RegionHint | None) -> Match:
    """`verify(a, b)`, and when its keypoints accept nothing and the hashes said that one photo is
    near a region of the other, that photo located there."""
    match = verify(a, b)
    if hint is None or judge(match):
        return match
    crop, whole = (a, b) if hint.crop_is_first else (b, a)
    found = locate(crop, whole, hint.region, hint.mirrored)
    return found if judge(found) else match
