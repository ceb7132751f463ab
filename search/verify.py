"""Verification of a candidate pair: is one photo an edit (crop, caption, rotation) of the other?

ORB keypoints on both photos (and on one of them mirrored), matched by Hamming distance with Lowe's
ratio test, then one affine transform fitted with RANSAC. A crop or an edit of the same photo
leaves dozens of matches that agree on a single transform; two photos that merely look alike
(the same product shot the same way) leave a handful that agree on none.
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


@dataclass(frozen=True)
class Features:
    """ORB keypoints of one photo (and of its mirror image), at VERIFY_SIDE."""

    points: npt.NDArray[np.float32]  # [n, 2]
    descriptors: npt.NDArray[np.uint8] | None  # [n, 32]
    mirror_points: npt.NDArray[np.float32]
    mirror_descriptors: npt.NDArray[np.uint8] | None


def _orb(gray: npt.NDArray[np.uint8]):
    import cv2

    orb = cv2.ORB_create(nfeatures=ORB_FEATURES)
    keypoints, descriptors = orb.detectAndCompute(gray, None)
    points = np.array([k.pt for k in keypoints], dtype=np.float32).reshape(-1, 2)
    return points, descriptors


def features_of_gray(gray: npt.NDArray[np.uint8]) -> Features:
    import cv2

    h, w = gray.shape
    scale = VERIFY_SIDE / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    points, descriptors = _orb(gray)
    mirror_points, mirror_descriptors = _orb(np.ascontiguousarray(gray[:, ::-1]))
    return Features(points, descriptors, mirror_points, mirror_descriptors)


def features_of_file(path: Path) -> Features | None:
    """Features of a photo file; None when it cannot be read (it then verifies nothing)."""
    try:
        img, _ = load_image(path, min_side=VERIFY_SIDE)
    except ImageError as e:
        log.warning("cannot verify %s: %s", path, e)
        return None
    return features_of_gray(np.asarray(img.convert("L")))


def _inliers(pa, da, pb, db) -> int:
    import cv2

    if da is None or db is None or len(da) < MIN_MATCHES or len(db) < MIN_MATCHES:
        return 0
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    good = [m[0] for m in matcher.knnMatch(da, db, k=2) if len(m) == 2 and m[0].distance < RATIO * m[1].distance]
    if len(good) < MIN_MATCHES:
        return 0
    src = pa[[m.queryIdx for m in good]]
    dst = pb[[m.trainIdx for m in good]]
    # A partial affine (rotation, one scale, shift) is what crops, resizes and small rotations make;
    # it has fewer ways than a homography to fit chance matches between look-alikes.
    _, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_PIXELS)
    if mask is None:
        return 0
    # Several matches on the same target point are one piece of evidence, not many.
    kept = dst[mask.ravel().astype(bool)]
    return len(np.unique(np.round(kept), axis=0))


def inliers(a: Features, b: Features) -> int:
    """Keypoint matches consistent with one transform from a to b, or from a mirrored a to b."""
    return max(
        _inliers(a.points, a.descriptors, b.points, b.descriptors),
        _inliers(a.mirror_points, a.mirror_descriptors, b.points, b.descriptors),
    )
