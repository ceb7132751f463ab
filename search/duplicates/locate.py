"""Finding a heavy crop inside its original by its pixels, where keypoints are too few.

A quarter of a photo, stored at 320 px, shows its part of the original at twice the scale the
original's own 320-px copy has it, and a plain garment or a soft background gives ORB a handful of
corners there: keypoint verification (search/duplicates/verify.py) then has nothing to fit. When the
crop's whole PDQ hash nominated it as near one stored region of the other photo (or that region's
mirror image: indexer/features.py REGIONS, search/duplicates/candidates.py `region_pairs`), the crop
is searched for around that region instead: scaled to the region's size at a few scales, it is slid
over the region and its surroundings (normalised cross-correlation, OpenCV's template matching; the
best scale refined in 3 % steps and the place to a fraction of a pixel), and at the best place the
aligned edges are compared as for any other match (`verify.correlation`, at LOCATE_SIDE px).
A crop is the same pixels as its place in the original, so nearly every cell lines up and the edges
correlate near 1; a look-alike's region, which the hash can also nominate, does not (`verify.judge`,
MIN_LOCATED_*).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from indexer.features import REGIONS
from search.duplicates.verify import Features, Fit, Match, correlation, fitted, judge

LOCATE_MARGIN = 0.5  # the search reaches this share of the region's size beyond each of its sides
LOCATE_SCALES = 3  # scales tried on each side of the region's own, 2 ** (1/6) apart (up to 1.41 x)
LOCATE_MIN_SIDE = 8  # px: a smaller scaled crop says too little to be placed (at the coarse half size)
LOCATE_NEAR = 6  # px: the fine search's reach around the coarse place, at full size
LOCATE_BLUR = 1.0  # Gaussian sigma (px) both sides are smoothed with before they are slid over each other
# A pair's nearest regions looked in, nearest first: a symmetric garment's centre quarter is near its
# region and, a few bits further or nearer, near that region's mirror image; only one is the crop.
LOCATE_TRIES = 3
# Longer side (px) of the frame the located crop's edges are compared in: finer than verification's
# SMALL_SIDE, where one garment's silhouette over another's can line up; the crop's own detail.
LOCATE_SIDE = 160
# A crop's place may also come from a similarity a few keypoints agreed on, if it barely turns the photo
# and leaves the crop at most this share of the other's area.
LOCATE_MAX_TURN = 5.0  # degrees
LOCATE_MAX_AREA = 0.8


Place = tuple[float, float, float, float, int, int]  # score, x, y, scale, width, height of a crop's place


class RegionHint(NamedTuple):
    """Which photo of a pair is near which stored region of the other, and whether mirrored."""

    crop_is_first: bool  # the pair's first photo is the crop, the second the one with the region
    region: int  # index in indexer/features.py REGIONS
    mirrored: bool  # the crop is the region's mirror image


def locate(crop: Features, whole: Features, box: tuple[float, float, float, float], mirrored: bool) -> Match:
    """The crop's best place near `box` of the whole photo ((left, top, right, bottom) shares of its
    sides, as REGIONS), judged by its aligned edges: a Match with no keypoints (inliers 0), transform
    "located" (or "mirrored located")."""
    import cv2

    a = np.ascontiguousarray(crop.gray[:, ::-1]) if mirrored else crop.gray
    b = whole.gray
    height, width = b.shape
    ah, aw = a.shape
    left, top, right, bottom = box
    rw, rh = (right - left) * width, (bottom - top) * height
    x0, y0 = int(max(0, (left - LOCATE_MARGIN * (right - left)) * width)), int(
        max(0, (top - LOCATE_MARGIN * (bottom - top)) * height))
    x1, y1 = int(min(width, (right + LOCATE_MARGIN * (right - left)) * width + 1)), int(
        min(height, (bottom + LOCATE_MARGIN * (bottom - top)) * height + 1))
    window = _smooth(b[y0:y1, x0:x1])
    own = float(np.sqrt(rw * rh / (aw * ah)))  # the crop's scale if it were the region exactly
    # Coarse: every scale over the whole window, both at half size (a quarter of the work).
    half = _smooth(cv2.resize(b[y0:y1, x0:x1], (max(1, (x1 - x0) // 2), max(1, (y1 - y0) // 2)),
                              interpolation=cv2.INTER_AREA))
    best: Place | None = None
    for step in range(-LOCATE_SCALES, LOCATE_SCALES + 1):
        best = _better_place(best, _place(half, a, own * 2 ** (step / 6) / 2))
    if best is None:
        return Match(0, 0.0)
    # Fine: scales 3 % apart around the best, each only a few pixels around its place, at full size.
    _, hx, hy, coarse, _, _ = best
    place: Place | None = None
    for step in (-2, -1, 0, 1, 2):
        scale = 2 * coarse * 2 ** (step / 24)
        place = _better_place(place, _place(window, a, scale, (2 * hx, 2 * hy)))
    if place is None:
        return Match(0, 0.0)
    _, x, y, _, tw, th = place
    sx, sy = tw / aw, th / ah
    # Pixel centres: the crop's pixel u lies at (u + 0.5) * s - 0.5 in the scaled crop.
    transform = np.array([[sx, 0, x0 + x + 0.5 * sx - 0.5], [0, sy, y0 + y + 0.5 * sy - 0.5], [0, 0, 1]],
                         dtype=np.float64)
    whole_corr, aligned, centre, exact = correlation(a, b, transform, LOCATE_SIDE)
    prefix = "mirrored " if mirrored else ""
    return Match(0, whole_corr, aligned, centre, 0.0, prefix + "located", exact)


def _place(window: npt.NDArray[np.float32], crop: npt.NDArray, scale: float,
           near: tuple[float, float] | None = None) -> Place | None:
    """(score, x, y, scale, width, height) of the crop's best place in the window at this scale (only
    within LOCATE_NEAR px of `near`, when given): the peak of the normalised cross-correlation, to a
    fraction of a pixel (a parabola through the peak and its neighbours); None where the scaled crop
    is too small, larger than the window, or plain."""
    import cv2

    tw, th = round(crop.shape[1] * scale), round(crop.shape[0] * scale)
    if min(tw, th) < LOCATE_MIN_SIDE or tw > window.shape[1] or th > window.shape[0]:
        return None
    left, top = 0, 0
    if near is not None:
        left = int(np.clip(round(near[0]) - LOCATE_NEAR, 0, window.shape[1] - tw))
        top = int(np.clip(round(near[1]) - LOCATE_NEAR, 0, window.shape[0] - th))
        window = window[top : top + th + 2 * LOCATE_NEAR, left : left + tw + 2 * LOCATE_NEAR]
    template = _smooth(cv2.resize(crop, (tw, th), interpolation=cv2.INTER_AREA))
    if float(template.std()) == 0.0:
        return None  # a plain crop matches anywhere equally: nothing to place
    scores = cv2.matchTemplate(window, template, cv2.TM_CCOEFF_NORMED)
    _, score, _, (x, y) = cv2.minMaxLoc(scores)
    dx = _peak(scores[y, x - 1 : x + 2]) if 0 < x < scores.shape[1] - 1 else 0.0
    dy = _peak(scores[y - 1 : y + 2, x]) if 0 < y < scores.shape[0] - 1 else 0.0
    return float(score), left + x + dx, top + y + dy, scale, tw, th


def _peak(values: npt.NDArray) -> float:
    """Where a parabola through three values around a maximum peaks, from -0.5 to 0.5."""
    left, middle, right = (float(v) for v in values)
    curvature = left - 2 * middle + right
    return float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5)) if curvature < 0 else 0.0


def _better_place(old: Place | None, new: Place | None) -> Place | None:
    return new if new is not None and (old is None or new[0] > old[0]) else old


def _smooth(gray: npt.NDArray) -> npt.NDArray[np.float32]:
    import cv2

    return np.asarray(cv2.GaussianBlur(gray.astype(np.float32), (0, 0), LOCATE_BLUR), dtype=np.float32)


def verify_hinted(a: Features, b: Features, hints: tuple[RegionHint, ...] = ()) -> Match:
    """`verify(a, b)`; when its keypoints accept nothing, a crop looked for by its pixels where the
    hashes said one photo is near a region of the other (`hints`, nearest first), then where a
    similarity its few keypoints agreed on puts one inside the other."""
    match, fits = fitted(a, b)
    if judge(match):
        return match
    places = [(*((a, b) if hint.crop_is_first else (b, a)), REGIONS[hint.region], hint.mirrored)
              for hint in hints[:LOCATE_TRIES]]
    places += [place for fit in fits if (place := _crop_place(a, b, fit)) is not None]
    for crop, whole, box, mirrored in places:
        found = locate(crop, whole, box, mirrored)
        if judge(found):
            return found
    return match


def _crop_place(a: Features, b: Features, fit: Fit) -> tuple[Features, Features, tuple[float, float, float, float],
                                                             bool] | None:
    """(crop, whole, box, mirrored) where a similarity puts one photo inside the other, as `locate`
    takes them; None when it turns the photo (locate slides it upright), or when the smaller one
    would cover more than LOCATE_MAX_AREA of the larger (keypoints judge those: crops are the
    search's business)."""
    m = fit.transform
    scale = float(np.sqrt(abs(np.linalg.det(m[:2, :2]))))
    if abs(float(np.degrees(np.arctan2(m[1, 0], m[0, 0])))) > LOCATE_MAX_TURN:
        return None
    crop, whole, mirrored = (a, b, fit.mirrored) if scale < 1 else (b, a, fit.mirrored)
    if scale >= 1:
        m = np.asarray(np.linalg.inv(m), dtype=np.float64)  # from b's frame to (mirrored) a's
    h, w = crop.gray.shape
    height, width = whole.gray.shape
    (x0, y0), (x1, y1) = (np.array([[0, 0, 1], [w, h, 1]], dtype=np.float64) @ m.T)[:, :2]
    left, right = sorted((float(x0) / width, float(x1) / width))
    top, bottom = sorted((float(y0) / height, float(y1) / height))
    if scale >= 1 and mirrored:  # b lies in the mirrored a: its own mirror lies in a, mirrored back
        left, right = 1 - right, 1 - left
    box = (max(0.0, left), max(0.0, top), min(1.0, right), min(1.0, bottom))
    if box[2] <= box[0] or box[3] <= box[1] or (box[2] - box[0]) * (box[3] - box[1]) > LOCATE_MAX_AREA:
        return None
    return crop, whole, box, mirrored
