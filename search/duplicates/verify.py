"""Verification of a candidate pair: is one photo an edit (crop, caption, turn, a photo of a screen,
a screenshot) of the other?

1. ORB keypoints on both photos (and on one of them mirrored), matched by Hamming distance with
   Lowe's ratio test, then one similarity transform fitted with RANSAC: a crop or an edit of the
   same photo leaves dozens of matches that agree on it. ORB is rotation invariant, so a copy
   turned 90 degrees matches like any other.
2. Two shots of different things in the same place (the same wall and hanger, another garment)
   also agree on a transform, through their background. So the first photo is warped onto the
   second with that transform and their edges are compared where they overlap (normalised
   correlation of gradient magnitudes at SMALL_SIDE px): a copy's edges line up, even recoloured,
   blurred or captioned; another garment on the same wall does not, although its plain pixels,
   dominated by the shared background, can correlate at 0.93.
3. When the similarity does not explain the matches (a photo of a screen: a keystone), a homography
   is fitted too; it has more freedom to fit chance matches, so it must gather more of them.
4. An overlay (a caption banner, stickers) hides part of the photo and leaves the rest aligned: the
   overlap is cut into cells, and the share of the edge content that lies in cells which line up is
   measured beside the correlation of the whole (`Match.aligned`).

Which rule accepts a pair is decided in `judge`, from the thresholds in this module.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from indexer.imageio import ImageError, load_image

log = logging.getLogger(__name__)

VERIFY_SIDE = 320  # both photos are scaled so that their longer side is at most this (indexer/features.py)
ORB_FEATURES = 500
# FAST's corner threshold (grey levels): OpenCV's default first. A soft, dim or plain photo that gives
# fewer than FEW_CORNERS corners there is detected again at LOW_FAST_THRESHOLD, or it and its copies
# have too few keypoints to verify (a slightly blurred sweater on a grey carpet: 16 corners at 20, 251
# at 5; its blurred, re-encoded and cropped copies were all lost). That is 27 % of clothing_small's
# photos, and costs `duplicates` there 46 % more CPU (a soft photo's pairs are now verified, not
# dismissed for want of matches); asking it of 9 % (under 100 corners) cost 20 % but lost 1.7 points
# of hard-set recall, and keeping only the best 250 corners of the second pass lost more (BENCHMARKS.md).
FAST_THRESHOLD = 20
LOW_FAST_THRESHOLD = 5
FEW_CORNERS = ORB_FEATURES // 2
ORB_BORDER = 31  # ORB's edgeThreshold (OpenCV's default): no keypoint within this many px of an edge
RATIO = 0.8  # Lowe's ratio test
RANSAC_PIXELS = 5.0  # reprojection error allowed, at VERIFY_SIDE
MIN_MATCHES = 8  # fewer ratio-test matches: not worth fitting a transform
SMALL_SIDE = 96  # longer side of the frame the aligned edges are compared in
MIN_OVERLAP = 0.2  # of the second photo's area: less is not enough to judge
CELLS = 8  # the overlap is cut into CELLS x CELLS cells for the overlay-robust check
CELL_ALIGNED = 0.6  # a cell whose edges correlate at least this much lines up
MIN_CELL_COVER = 0.9  # a cell counts only where the warped photo covers this share of it
CELL_FLOOR = 0.25  # a cell whose edges vary less than this share of the overlap's is plain
MIN_INFORMATIVE = 8  # fewer informative cells: no cell-level verdict

# What passes (measured by `python -m bench.duplicates`, BENCHMARKS.md "Near-duplicates"; look-alikes
# of the same garment on the same wall gather up to 15 matches and correlate up to 0.80):
MIN_INLIERS = 12  # ORB matches that agree on one similarity transform ...
MIN_CORRELATION = 0.85  # ... and the aligned edges correlate this much ...
# ... and at least half of the central cells line up: two screenshots of one app (or two photos in one
# frame) gather a dozen matches on the shared bars and text, whose strong edges carry the whole
# overlap's correlation, while the photos in the middle differ (0.25 of it lined up; copies accepted
# by this rule on the hard set: 0.75 or more in 99 %).
MIN_WHOLE_CENTRE = 0.5
MIN_HOMOGRAPHY_INLIERS = 20  # a homography has more freedom: it must gather more matches
MIN_CROP_INLIERS = 6  # a heavy crop keeps few keypoints of the original: fewer matches do ...
MIN_CROP_CORRELATION = 0.92  # ... when the edges line up nearly perfectly ...
MIN_CROP_ALIGNED = 0.8  # ... in nearly every cell
MIN_OVERLAY_INLIERS = 30  # an overlay-hidden copy: twice the matches a look-alike gathers ...
MIN_ALIGNED = 0.40  # ... and this share of the informative cells line up (the rest is hidden)
MIN_OVERLAY_SPREAD = 0.15  # ... and the matches spread over this share of the photo, not one strip
MIN_CENTRE = 0.25  # whatever the rule, this share of the central cells must line up
# Part hidden, and what shows is either the same pixels (an overlay laid on the photo itself: its
# lined-up cells correlate near 1) or a re-photographed copy whose middle is all there. Different
# garments laid on one patterned couch line up by the couch's pattern (median cell correlation
# 0.88-0.92 in clothing_small) with the garment, the middle, not lining up (central share 0.36-0.58).
MIN_EXACT = 0.95  # median correlation of the lined-up cells: the visible part is the same pixels ...
MIN_HIDDEN_CENTRE = 0.75  # ... or this share of the central cells lines up
# Or the matches gather in a smaller part of the photo (stickers over much of it, a banner), but what
# lines up is the same pixels even more surely and the middle mostly shows: memes of different photos
# on one banner template, and different garments on one couch or wall, reach a median cell correlation
# of 0.92 at most with 30 or more matches (bench sets, clothing_small); the copies 0.99-1.00.
MIN_SAME_PIXELS = 0.98
MIN_SAME_CENTRE = 0.5
MIN_SAME_SPREAD = 0.08
# A crop found by its pixels near a stored region of the other, or where a few keypoints put it
# (search/duplicates/locate.py), without enough keypoints: it is the same pixels, so its edges
# correlate near 1 in nearly every cell, compared at LOCATE_SIDE px. The best place of a look-alike
# reached 0.80 there (two pairs of dark trousers, one silhouette on the other, in clothing_small; 0.88
# at SMALL_SIDE), the bench sets' 0.60; where keypoints put it, 0.61 (clothing_small).
MIN_LOCATED_CORRELATION = 0.93
MIN_LOCATED_ALIGNED = 0.9


@dataclass(frozen=True)
class Match:
    """What verification found: consistent keypoint matches, how alike the aligned edges are, and
    by which transform."""

    inliers: int
    correlation: float  # normalised correlation over the overlap, -1..1 (0 without a transform)
    aligned: float = 0.0  # share of the informative cells that line up, 0..1
    centre: float = 0.0  # the same share among the central cells (the inner half of each side)
    spread: float = 0.0  # area of the convex hull of the matched points, as a share of the photo's
    transform: str = ""  # "similarity", "homography", "located" or "" (none found); "mirrored " before it
    exact: float = 0.0  # median correlation of the cells that line up: 1.0 when they are the same pixels


@dataclass(frozen=True)
class Features:
    """ORB keypoints of one photo (and of its mirror image), and the photo itself, at VERIFY_SIDE."""

    points: npt.NDArray[np.float32]  # [n, 2]
    descriptors: npt.NDArray[np.uint8] | None  # [n, 32]
    mirror_points: npt.NDArray[np.float32]
    mirror_descriptors: npt.NDArray[np.uint8] | None
    gray: npt.NDArray[np.uint8]  # longer side at most VERIFY_SIDE: the frame of the points


def _orb(gray: npt.NDArray):
    import cv2

    if min(gray.shape) < 2 * ORB_BORDER + 1:  # no room for a keypoint (and OpenCV's pyramid fails on 1 px)
        return np.zeros((0, 2), np.float32), None
    orb = cv2.ORB_create(nfeatures=ORB_FEATURES, fastThreshold=FAST_THRESHOLD)  # type: ignore[attr-defined]
    keypoints, descriptors = orb.detectAndCompute(gray, None)
    if len(keypoints) < FEW_CORNERS:
        orb.setFastThreshold(LOW_FAST_THRESHOLD)
        keypoints, descriptors = orb.detectAndCompute(gray, None)
    points = np.array([k.pt for k in keypoints], dtype=np.float32).reshape(-1, 2)
    return points, descriptors


def features_of_gray(gray: npt.NDArray, mirror: bool = True) -> Features:
    """Features of a grayscale photo; scaled down to VERIFY_SIDE when larger (never up: a small
    photo keeps its own detail). Without `mirror`, those of its mirror image are left empty."""
    import cv2

    cv2.setNumThreads(1)
    h, w = gray.shape
    if max(h, w) > VERIFY_SIDE:
        scale = VERIFY_SIDE / max(h, w)
        gray = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    gray = np.ascontiguousarray(gray, dtype=np.uint8)
    points, descriptors = _orb(gray)
    if not mirror:
        return Features(points, descriptors, np.zeros((0, 2), np.float32), None, gray)
    mirror_points, mirror_descriptors = _orb(np.ascontiguousarray(gray[:, ::-1]))
    return Features(points, descriptors, mirror_points, mirror_descriptors, gray)


def features_of_jpeg(data: bytes, mirror: bool = True) -> Features | None:
    """Features of the stored grayscale copy (indexer/features.py); None when it cannot be decoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            return features_of_gray(np.asarray(img.convert("L")), mirror)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        log.warning("a stored grayscale copy does not decode: %s", e)
        return None


def features_of_file(path: Path) -> Features | None:
    """Features of a photo file; None when it cannot be read (it then verifies nothing)."""
    try:
        img, _ = load_image(path, min_side=VERIFY_SIDE)
    except ImageError as e:
        log.warning("cannot verify %s: %s", path, e)
        return None
    return features_of_gray(np.asarray(img.convert("L")))


def _matches(da, db) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(rows of da, rows of db) of the descriptors whose nearest neighbour passes Lowe's ratio test.

    FAISS's exact binary k-NN (popcount over the 256-bit ORB descriptors) finds the two nearest; it
    is what OpenCV's brute-force Hamming matcher finds (a tie for the nearest fails the ratio test
    either way), at a third of its time (0.5 against 1.8 ms for 500 x 500 descriptors).
    """
    import faiss

    none = np.empty(0, np.int64)
    if da is None or db is None or len(da) < MIN_MATCHES or len(db) < MIN_MATCHES:
        return none, none
    distances, nearest = faiss.knn_hamming(np.ascontiguousarray(da), np.ascontiguousarray(db), 2)
    good = distances[:, 0] < RATIO * distances[:, 1]
    return np.flatnonzero(good), nearest[good, 0].astype(np.int64)


def _distinct(dst: npt.NDArray[np.float32], mask) -> int:
    # Several matches on the same target point are one piece of evidence, not many.
    return len(np.unique(np.round(dst[mask.ravel().astype(bool)]), axis=0))


def _spread(points: npt.NDArray[np.float32], mask, shape: tuple[int, ...]) -> float:
    """Area of the convex hull of the inlier points, as a share of the photo they lie in: matches on
    a shared caption banner or frame cover a strip of it, those of a copy most of it (of the photo
    inside the other, for a screenshot or a crop: `verify` takes the larger share of the two)."""
    import cv2

    kept = points[mask.ravel().astype(bool)]
    if len(kept) < 3:
        return 0.0
    return float(cv2.contourArea(cv2.convexHull(kept.reshape(-1, 1, 2)))) / float(shape[0] * shape[1])


def _similarity(src, dst) -> tuple[int, npt.NDArray[np.float64] | None, object]:
    """(inliers, 3x3 transform, inlier mask) of one rotation + scale + shift fitted with RANSAC."""
    import cv2

    transform, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_PIXELS)
    if transform is None or mask is None or not 1 / 64 < abs(np.linalg.det(transform[:, :2])) < 64:
        return 0, None, None  # none, or one that shrinks a photo to a few pixels: no copy looks so
    return _distinct(dst, mask), np.vstack([transform, [0.0, 0.0, 1.0]]), mask


def _homography(src, dst) -> tuple[int, npt.NDArray[np.float64] | None, object]:
    """(inliers, 3x3 homography) fitted with RANSAC, or (0, None) when it folds or tilts too far to be
    a view of a flat photo."""
    import cv2

    if len(src) < MIN_HOMOGRAPHY_INLIERS:
        return 0, None, None
    h, mask = cv2.findHomography(src, dst, cv2.RANSAC, RANSAC_PIXELS, maxIters=500, confidence=0.99)
    if h is None or mask is None or abs(h[2, 2]) < 1e-9:
        return 0, None, None
    h = h / h[2, 2]
    det = float(np.linalg.det(h[:2, :2]))
    if not 1 / 64 < det < 64 or abs(h[2, 0]) > 0.01 or abs(h[2, 1]) > 0.01:
        return 0, None, None
    return _distinct(dst, mask), h, mask


def _edges(gray: npt.NDArray) -> npt.NDArray[np.float32]:
    import cv2

    x = cv2.GaussianBlur(gray.astype(np.float32), (0, 0), 1.0)  # forgives a pixel of misalignment
    gx, gy = cv2.Sobel(x, cv2.CV_32F, 1, 0), cv2.Sobel(x, cv2.CV_32F, 0, 1)
    return np.sqrt(gx * gx + gy * gy)


def _footprint(transform: npt.NDArray[np.float64], shape: tuple[int, ...]) -> float:
    """Area of a photo of this shape once mapped by the transform (a quadrilateral's shoelace area)."""
    h, w = shape[:2]
    corners = np.array([[0, 0, 1], [w, 0, 1], [w, h, 1], [0, h, 1]], dtype=np.float64) @ transform.T
    x, y = corners[:, 0] / corners[:, 2], corners[:, 1] / corners[:, 2]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def correlation(a_gray: npt.NDArray, b_gray: npt.NDArray, transform: npt.NDArray,
                side: int = SMALL_SIDE) -> tuple[float, float, float, float]:
    """(correlation, aligned, centre, exact) of two photos related by a 3x3 transform from a's frame to b's.

    They are compared in the frame of the one that lies inside the other (a crop is compared with
    the part of the original it shows, not the original with the crop's small footprint), at a
    longer side of `side` px, on edges computed after warping, so both sides have the same detail.
    correlation: the normalised correlation of the edges over the overlap; aligned: the share of
    the overlap's informative cells (CELLS x CELLS) whose own correlation is at least CELL_ALIGNED;
    centre: that share among the central cells; exact: the median correlation of the cells that line
    up (near 1 where they are the same pixels, lower for a re-photographed scene). Two memes of
    different photos on one template, or two photos pasted on one poster, line up around the photo
    but not in its middle.
    """
    import cv2

    if _footprint(transform, a_gray.shape) < b_gray.shape[0] * b_gray.shape[1]:
        a_gray, b_gray = b_gray, a_gray
        transform = np.linalg.inv(transform)
    h, w = b_gray.shape
    k = side / max(h, w)
    size = (max(1, round(w * k)), max(1, round(h * k)))
    target = cv2.resize(b_gray, size, interpolation=cv2.INTER_AREA)
    m = np.diag([k, k, 1.0]) @ transform
    s = float(np.sqrt(abs(np.linalg.det(m[:2, :2]))))  # pixels of the target per pixel of a
    source = a_gray
    if s < 1:  # shrink a first, so the warp does not alias
        source = cv2.resize(a_gray, (max(1, round(a_gray.shape[1] * s)), max(1, round(a_gray.shape[0] * s))),
                            interpolation=cv2.INTER_AREA)
        m = m @ np.diag([a_gray.shape[1] / source.shape[1], a_gray.shape[0] / source.shape[0], 1.0])
    warped = cv2.warpPerspective(source.astype(np.float32), m, size, flags=cv2.INTER_LINEAR, borderValue=0)
    cover = cv2.warpPerspective(np.ones(source.shape, np.float32), m, size, flags=cv2.INTER_LINEAR, borderValue=0)
    # Less a few pixels inside the edge of the overlap: a letterbox bar or a crop border makes an edge
    # there that the other photo has no reason to have.
    inside = cv2.erode((cover > 0.99).astype(np.uint8), np.ones((7, 7), np.uint8),
                       borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0
    if inside.sum() < MIN_OVERLAP * size[0] * size[1]:
        return 0.0, 0.0, 0.0, 0.0
    a_edges, b_edges = _edges(warped), _edges(target)
    whole = _ncc(a_edges[inside], b_edges[inside])
    ys, xs = np.nonzero(inside)
    top, bottom, left, right = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    # Every cell's sums at once, from integral images of the masked edges.
    m = inside.astype(np.float64)
    x, y = a_edges * m, b_edges * m
    sums = [cv2.integral(v)  for v in (m, x, y, x * x, y * y, x * y)]
    r0 = top + (bottom - top) * np.arange(CELLS) // CELLS
    r1 = top + (bottom - top) * np.arange(1, CELLS + 1) // CELLS
    c0 = left + (right - left) * np.arange(CELLS) // CELLS
    c1 = left + (right - left) * np.arange(1, CELLS + 1) // CELLS
    R0, C0 = np.meshgrid(r0, c0, indexing="ij")
    R1, C1 = np.meshgrid(r1, c1, indexing="ij")
    n, sx, sy, sxx, syy, sxy = (s[R1, C1] - s[R0, C1] - s[R1, C0] + s[R0, C0] for s in sums)
    area = np.maximum((R1 - R0) * (C1 - C0), 1)
    k = np.maximum(n, 1)
    vx, vy = np.maximum(sxx / k - (sx / k) ** 2, 0), np.maximum(syy / k - (sy / k) ** 2, 0)
    cov = sxy / k - sx * sy / (k * k)
    floor = (CELL_FLOOR * float(b_edges[inside].std())) ** 2
    informative = (n / area >= MIN_CELL_COVER) & (vx >= floor) & (vy >= floor) & (vx > 0) & (vy > 0)
    lines_up = informative & (cov >= CELL_ALIGNED * np.sqrt(vx * vy))
    if informative.sum() < MIN_INFORMATIVE:
        return whole, 0.0, 0.0, 0.0
    share = float(lines_up.sum() / informative.sum())
    inner = slice(CELLS // 4, CELLS - CELLS // 4)
    central = informative[inner, inner].sum()
    cells = cov[lines_up] / np.sqrt(vx[lines_up] * vy[lines_up])
    exact = float(np.median(cells)) if cells.size else 0.0
    return whole, share, float(lines_up[inner, inner].sum() / central) if central else share, exact


def _ncc(x: npt.NDArray, y: npt.NDArray) -> float:
    x, y = x - x.mean(), y - y.mean()
    denominator = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / denominator) if denominator > 0 else 0.0


def verify(a: Features, b: Features) -> Match:
    """The best account of a-to-b and mirrored-a-to-b: a similarity transform, else a homography;
    its inliers, and its aligned correlation."""
    return fitted(a, b)[0]


@dataclass(frozen=True)
class Fit:
    """A similarity transform keypoints agreed on, from a's frame (mirrored, if so) to b's."""

    mirrored: bool
    transform: npt.NDArray[np.float64]  # 3x3
    inliers: int


def fitted(a: Features, b: Features) -> tuple[Match, list[Fit]]:
    """`verify`'s Match, and the similarity transforms with at least MIN_CROP_INLIERS matches it
    fitted on the way (search/duplicates/locate.py looks for a crop where they put it). Once a
    match passes, the rest is not fitted."""
    best = Match(0, 0.0)
    fits: list[Fit] = []
    mirror = np.ascontiguousarray(a.gray[:, ::-1])
    for mirrored, pa, da, gray in ((False, a.points, a.descriptors, a.gray),
                                   (True, a.mirror_points, a.mirror_descriptors, mirror)):
        rows_a, rows_b = _matches(da, b.descriptors)
        if len(rows_a) < MIN_MATCHES:
            continue
        src, dst = pa[rows_a], b.points[rows_b]
        prefix = "mirrored " if mirrored else ""
        n, transform, mask = _similarity(src, dst)
        if transform is not None and n < MIN_CROP_INLIERS:  # fewer pass no rule: nothing to compare
            best = _better(best, Match(n, 0.0, transform=prefix + "similarity"))
        elif transform is not None:
            fits.append(Fit(mirrored, transform, n))
            whole, aligned, centre, exact = correlation(gray, b.gray, transform)
            spread = max(_spread(src, mask, gray.shape), _spread(dst, mask, b.gray.shape))
            best = _better(best, Match(n, whole, aligned, centre, spread, prefix + "similarity", exact))
            if judge(best):
                return best, fits
        if n < MIN_CROP_INLIERS:
            continue  # not even a part of the photo agrees on a similarity: no view of it either
        n, transform, mask = _homography(src, dst)
        if transform is not None and n >= MIN_HOMOGRAPHY_INLIERS:
            whole, aligned, centre, exact = correlation(gray, b.gray, transform)
            spread = max(_spread(src, mask, gray.shape), _spread(dst, mask, b.gray.shape))
            best = _better(best, Match(n, whole, aligned, centre, spread, prefix + "homography", exact))
            if judge(best):
                return best, fits
    return best, fits


def inlier_rows(a: Features, b: Features, transform: str = "similarity"
                ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.uint8]]:
    """(rows of a's keypoints, rows of b's, a's descriptors) of the matches that a `transform` (a
    Match's: "similarity" or "homography", "mirrored " before it when a was mirrored) fitted from a
    to b agrees on, as `fitted` finds them (search/duplicates/shared.py asks which of them lie on
    graphics other photos share)."""
    mirrored = transform.startswith("mirrored")
    points, descriptors = (a.mirror_points, a.mirror_descriptors) if mirrored else (a.points, a.descriptors)
    none = np.empty(0, np.int64)
    if descriptors is None:
        return none, none, np.zeros((0, 32), np.uint8)
    rows_a, rows_b = _matches(descriptors, b.descriptors)
    if len(rows_a) < MIN_MATCHES:
        return none, none, descriptors
    fit = _homography if transform.endswith("homography") else _similarity
    _, found, mask = fit(points[rows_a], b.points[rows_b])
    if found is None:
        return none, none, descriptors
    keep = np.asarray(mask).ravel().astype(bool)
    return rows_a[keep], rows_b[keep], descriptors


def _better(old: Match, new: Match) -> Match:
    if bool(judge(new)) != bool(judge(old)):
        return new if judge(new) else old
    return new if (new.inliers, new.correlation) > (old.inliers, old.correlation) else old


def judge(m: Match) -> str:
    """Why the pair is a copy ("" when it is not): the rule its match passed, in words."""
    return rule(m)[0]


def rule(m: Match) -> tuple[str, int]:
    """(the rule `m` passed, in words; the keypoint matches that rule asks for), or ("", 0). A crop
    found by its pixels asks for none; search/duplicates/shared.py asks for the others again without
    the matches on graphics other photos share."""
    homography = m.transform.endswith("homography")
    if m.centre < MIN_CENTRE:
        return "", 0  # what lines up is around the photo (a shared template, frame or poster), not the photo
    if m.transform.endswith("located"):  # no keypoints: only its pixels speak for it
        if m.correlation >= MIN_LOCATED_CORRELATION and m.aligned >= MIN_LOCATED_ALIGNED:
            return (f"{m.transform}, a crop of the other found by its pixels: aligned edges correlate "
                    f"{m.correlation:.2f}, {m.aligned:.0%} of the cells line up"), 0
        return "", 0
    whole = MIN_HOMOGRAPHY_INLIERS if homography else MIN_INLIERS
    if m.inliers >= whole and m.correlation >= MIN_CORRELATION and m.centre >= MIN_WHOLE_CENTRE:
        return f"{m.transform}: {m.inliers} keypoint matches, aligned edges correlate {m.correlation:.2f}", whole
    if m.inliers >= MIN_CROP_INLIERS and m.correlation >= MIN_CROP_CORRELATION and m.aligned >= MIN_CROP_ALIGNED:
        return (f"{m.transform}, a part of the other: {m.inliers} keypoint matches, aligned edges correlate "
                f"{m.correlation:.2f}"), MIN_CROP_INLIERS
    if m.inliers >= MIN_OVERLAY_INLIERS and m.aligned >= MIN_ALIGNED and (
            (m.spread >= MIN_OVERLAY_SPREAD and (m.exact >= MIN_EXACT or m.centre >= MIN_HIDDEN_CENTRE))
            or (m.spread >= MIN_SAME_SPREAD and m.exact >= MIN_SAME_PIXELS and m.centre >= MIN_SAME_CENTRE)):
        return (f"{m.transform}, part hidden: {m.inliers} keypoint matches, {m.aligned:.0%} of the photo's "
                f"cells line up (whole overlap {m.correlation:.2f})"), MIN_OVERLAY_INLIERS
    return "", 0
