"""Matches on graphics that many photos share are not evidence that two photos are one.

Two memes of *different* photos made from one template share its caption banner and sticker, pixel
for pixel, and where both fell in the same place verification can accept them: dozens of keypoint
matches, the banner's cells lined up as the same pixels, the photos themselves taken for overlays
(verify.judge's "part hidden" rule), or a homography through the banner whose edges correlate
enough. Their figures lie inside those of true copies, so no threshold on one pair tells them
apart. What does is the rest of the library: the template's keypoints match in many other photos,
a photo's own keypoints do not (inter-image burstiness, Jégou, Douze and Schmid, "On the burstiness
of visual elements", CVPR 2009).

So, after verification, each pair that keypoint matches made a copy and that alone joins two groups
(a bridge of the copy graph: a pair inside a group changes no group) is checked against a reference
of up to REFERENCE_PHOTOS other photos, none of them in the pair's own group: the two photos' other
candidates first (memes of one template are near each other by hash), then photos of other verified
pairs. A match is shared when both its keypoints have a match within SHARED_BITS bits in at least
SHARED_BY reference photos. The pair stays a copy only if the matches that are not shared are still
as many as its rule asks for (verify.rule).

Measured (`python -m bench.duplicates`, the hard sets, BENCHMARKS.md): the memes of different
photos had 79 to 90 % of their matches shared; the true copies that were bridges, at most a few.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from search.duplicates.verify import Features, inlier_rows

if TYPE_CHECKING:
    from search.duplicates.candidates import Pair
    from search.duplicates.stored import StoredVerifier

log = logging.getLogger(__name__)

# ORB descriptors (256 bits) of one graphic in two photos are within a few bits of each other,
# re-encoded or not; at 40 bits the corners of ordinary photos began to match other photos (up to
# 24 % of a true copy's matches on the hard set, against 2 % at 32).
SHARED_BITS = 32
SHARED_BY = 2  # reference photos a keypoint must match in to be shared (one could be a copy missed)
REFERENCE_PHOTOS = 200  # their keypoints cost ~1 s, paid only when a verified pair is a bridge
NEIGHBOURS = 32  # nearest reference descriptors looked at for each keypoint


def drop_shared_graphics(pairs: list[Pair], by_keypoints: dict[tuple[int, int], tuple[str, int]],
                         verifier: StoredVerifier, candidates: Iterable[tuple[int, int]] = ()) -> list[Pair]:
    """`pairs` without the keypoint-verified ones (`by_keypoints`: (a, b) -> the Match's transform and
    the matches its rule needs) that no longer have those matches once graphics other photos share
    are set aside; `verifier` reads the photos' keypoints, `candidates` are all the candidate pairs
    (a suspect's other candidates are the first photos looked at: memes of one template are near
    each other by hash)."""
    import networkx as nx

    if not by_keypoints:
        return pairs
    graph = nx.Graph()
    graph.add_edges_from((p.a, p.b) for p in pairs)
    suspects = [(a, b) for a, b in (tuple(sorted(e)) for e in nx.bridges(graph)) if (a, b) in by_keypoints]
    if not suspects:
        return pairs
    group = {i: n for n, members in enumerate(nx.connected_components(graph)) for i in members}
    ends = {i for key in suspects for i in key}
    partners = sorted({j for key in candidates for i, j in (key, key[::-1]) if i in ends})
    involved = sorted({i for key in by_keypoints for i in key} - set(partners))
    reference = _Reference(partners, involved, verifier.upright, group)
    upright = verifier.upright(sorted(ends))  # in one query, without the mirror images' keypoints ...
    dropped = set()
    for a, b in suspects:
        transform, needed = by_keypoints[(a, b)]
        # ... which only a pair matched through a's mirror image needs
        fa = verifier.features(a) if transform.startswith("mirrored") else upright.get(a)
        fb = upright.get(b)
        if fa is None or fb is None:
            continue
        rows_a, rows_b, descriptors_a = inlier_rows(fa, fb, transform)
        if not len(rows_a) or fb.descriptors is None:
            continue
        shared = reference.shared(descriptors_a[rows_a], exclude=group[a])
        if shared.any():  # and on b's side too (b's keypoints are looked up only where a's are shared)
            shared[shared] = reference.shared(fb.descriptors[rows_b[shared]], exclude=group[a])
        if not shared.any():
            continue
        own = _distinct(fb.points[rows_b[~shared]])  # matches, counted as verify counts them
        if own < needed:
            log.info("photos %d and %d: %d of their %d matches are on graphics other photos share: not a copy",
                     a, b, _distinct(fb.points[rows_b]) - own, _distinct(fb.points[rows_b]))
            dropped.add((a, b))
    return [p for p in pairs if (p.a, p.b) not in dropped]


def _distinct(points: npt.NDArray[np.float32]) -> int:
    """Matches on one target point are one piece of evidence (verify._distinct)."""
    return len(np.unique(np.round(points), axis=0))


class _Reference:
    """The keypoints of a sample of photos, searchable by descriptor (FAISS's exact binary k-NN)."""

    def __init__(self, first: Sequence[int], then: Sequence[int],
                 upright: Callable[[list[int]], dict[int, Features]], group: dict[int, int]) -> None:
        # `first`, then `then` (a sample spread over it) up to REFERENCE_PHOTOS: a fixed choice, so
        # that the same library gives the same verdicts.
        chosen = list(first)[:REFERENCE_PHOTOS]
        room = REFERENCE_PHOTOS - len(chosen)
        if room > 0 and then:
            chosen += list(then)[:: max(1, len(then) // room)][:room]
        blocks, owners = [], []
        for i, f in upright(chosen).items():
            if f.descriptors is not None and len(f.descriptors):
                blocks.append(f.descriptors)
                owners.append(np.full(len(f.descriptors), i, dtype=np.int64))
        self.descriptors = np.ascontiguousarray(np.concatenate(blocks)) if blocks else np.zeros((0, 32), np.uint8)
        self.owner = np.concatenate(owners) if owners else np.zeros(0, np.int64)
        self.group = group  # photo id -> its copy group (a photo in none is a group of its own)

    def shared(self, descriptors: npt.NDArray[np.uint8], *, exclude: int) -> npt.NDArray[np.bool_]:
        """Which of these descriptors match in SHARED_BY reference photos outside group `exclude`."""
        import faiss

        if not len(self.descriptors) or not len(descriptors):
            return np.zeros(len(descriptors), dtype=bool)
        k = min(NEIGHBOURS, len(self.descriptors))
        distances, nearest = faiss.knn_hamming(np.ascontiguousarray(descriptors), self.descriptors, k)
        out = np.zeros(len(descriptors), dtype=bool)
        for row in range(len(descriptors)):
            owners = self.owner[nearest[row][distances[row] <= SHARED_BITS]]
            out[row] = len({int(o) for o in owners if self.group.get(int(o), -1 - int(o)) != exclude}) >= SHARED_BY
        return out
