"""Verification of a candidate pair: is one photo an edit (crop, caption, rotation) of the other?

1. ORB keypoints on both photos (and on one of them mirrored), matched by Hamming distance with
   Lowe's ratio test, then one similarity transform fitted with RANSAC: a crop or an edit of the
   same photo leaves dozens of matches that agree on it.
2. Two shots of different things in the same place (the same wall and hanger, another garment)
   also agree on a transform, through their background. So the first photo is warped onto the
   second with that transform and their edges are compared where they overlap (normalised
   correlation of gradient magnitudes at 100 px): a copy's edges line up, even recoloured, blurred
   or captioned (>= 0.84 measured); another garment on the same wall does not (<= 0.63), although
   its plain pixels, dominated by the shared background, can correlate at 0.93.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from indexer.imageio import ImageError, load_image

log = logging.getLogger(__name__)

VERIFY_SIDE = 400  # both photos are scaled so that their longer side is this many pixels
ORB_FEATURES = 500
RATIO = 0.8  # Lowe's ratio test
RANSAC_PIXELS = 6.0  # reprojection error allowed, at VERIFY_SIDE
MIN_MATCHES = 8  # fewer ratio-test matches: not worth fitting a transform
SMALL_SIDE = 100  # the grayscale copy compared after alignment
MIN_OVERLAP = 0.2  # of the second photo's area: less is not enough to judge


@dataclass(frozen=True)
class Match:
    """What verification found: consistent keypoint matches, and how alike the aligned pixels are."""

    inliers: int
    correlation: float  # normalised correlation over the overlap, -1..1 (0 without a transform)


@dataclass(frozen=True)
class Features:
    """ORB keypoints of one photo (and of its mirror image), at VERIFY_SIDE."""

    points: npt.NDArray[np.float32]  # [n, 2]
    descriptors: npt.NDArray[np.uint8] | None  # [n, 32]
    mirror_points: npt.NDArray[np.float32]
    mirror_descriptors: npt.NDArray[np.uint8] | None
    edges: npt.NDArray[np.float32]  # gradient magnitude, longer side SMALL_SIDE, for the comparison


def _orb(gray: npt.NDArray):
    import cv2

    orb = cv2.ORB_create(nfeatures=ORB_FEATURES)  # type: ignore[attr-defined]
    keypoints, descriptors = orb.detectAndCompute(gray, None)
    points = np.array([k.pt for k in keypoints], dtype=np.float32).reshape(-1, 2)
    return points, descriptors


def features_of_gray(gray: npt.NDArray) -> Features:
    import cv2

    h, w = gray.shape
    scale = VERIFY_SIDE / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    points, descriptors = _orb(gray)
    mirror_points, mirror_descriptors = _orb(np.ascontiguousarray(gray[:, ::-1]))
    k = SMALL_SIDE / VERIFY_SIDE
    small = cv2.resize(gray, (max(1, round(size[0] * k)), max(1, round(size[1] * k))), interpolation=cv2.INTER_AREA)
    return Features(points, descriptors, mirror_points, mirror_descriptors, _edges(small))


def _edges(small: npt.NDArray) -> npt.NDArray[np.float32]:
    import cv2

    x = cv2.GaussianBlur(small.astype(np.float32), (0, 0), 1.0)  # forgives a pixel of misalignment
    gx, gy = cv2.Sobel(x, cv2.CV_32F, 1, 0), cv2.Sobel(x, cv2.CV_32F, 0, 1)
    return np.sqrt(gx * gx + gy * gy)


def features_of_file(path: Path) -> Features | None:
    """Features of a photo file; None when it cannot be read (it then verifies nothing)."""
    try:
        img, _ = load_image(path, min_side=VERIFY_SIDE)
    except ImageError as e:
        log.warning("cannot verify %s: %s", path, e)
        return None
    return features_of_gray(np.asarray(img.convert("L")))


def _fit(pa, da, pb, db) -> tuple[int, npt.NDArray[np.float64] | None]:
    """(inliers, 2x3 transform from a to b) of the ratio-test matches, or (0, None)."""
    import cv2

    if da is None or db is None or len(da) < MIN_MATCHES or len(db) < MIN_MATCHES:
        return 0, None
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    good = [m[0] for m in matcher.knnMatch(da, db, k=2) if len(m) == 2 and m[0].distance < RATIO * m[1].distance]
    if len(good) < MIN_MATCHES:
        return 0, None
    src = pa[[m.queryIdx for m in good]]
    dst = pb[[m.trainIdx for m in good]]
    # A partial affine (rotation, one scale, shift) is what crops, resizes and small rotations make;
    # it has fewer ways than a homography to fit chance matches between look-alikes.
    transform, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_PIXELS)
    if transform is None or mask is None:
        return 0, None
    # Several matches on the same target point are one piece of evidence, not many.
    kept = dst[mask.ravel().astype(bool)]
    return len(np.unique(np.round(kept), axis=0)), transform


def correlation(a_edges: npt.NDArray[np.float32], b_edges: npt.NDArray[np.float32],
                transform: npt.NDArray[np.float64]) -> float:
    """Normalised correlation of a's edges warped onto b's (transform at VERIFY_SIDE scale), over
    the part of b that a covers."""
    import cv2

    m = transform.copy()
    m[:, 2] *= SMALL_SIDE / VERIFY_SIDE  # the same transform between the small copies
    h, w = b_edges.shape
    warped = cv2.warpAffine(a_edges, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
    cover = cv2.warpAffine(np.ones_like(a_edges), m, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
    # Less a few pixels inside the edge of the overlap: a letterbox bar or a crop border makes an edge
    # there that the other photo has no reason to have.
    inside = cv2.erode((cover > 0.99).astype(np.uint8), np.ones((7, 7), np.uint8),
                       borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0
    if inside.sum() < MIN_OVERLAP * w * h:
        return 0.0
    x, y = warped[inside], b_edges[inside]
    x, y = x - x.mean(), y - y.mean()
    denominator = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / denominator) if denominator > 0 else 0.0


def verify(a: Features, b: Features) -> Match:
    """The better of a-to-b and mirrored-a-to-b: its inliers and its aligned correlation."""
    n, transform = _fit(a.points, a.descriptors, b.points, b.descriptors)
    n_mirror, transform_mirror = _fit(a.mirror_points, a.mirror_descriptors, b.points, b.descriptors)
    if n_mirror > n:
        n, transform, source = n_mirror, transform_mirror, np.ascontiguousarray(a.edges[:, ::-1])
    else:
        source = a.edges
    if transform is None:
        return Match(0, 0.0)
    return Match(n, correlation(source, b.edges, transform))
