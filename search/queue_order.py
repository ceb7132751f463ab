"""The labelling queue's order: photos that cover the collection first, then the least certain, classes balanced.

Pure arrays in, ids out, so the web queue, `lookalike queue` and the label simulation share one order:
1. one typical photo (the one nearest its k-means centre) of each cluster that has no label yet,
   biggest cluster first: a cold start learns every kind of photo early;
2. then the lowest margin (winner's probability minus runner-up's) by the current model, taken in
   turn from each suggested class so that no class floods the queue;
3. near-duplicates of photos already labelled last: they get their twin's label anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from search.duplicates import DEFAULT_THRESHOLD as NEAR_DUPLICATE

CLUSTER_SHARE = 0.01  # one cluster per this share of the collection (its 1 % most typical photos)
MIN_CLUSTERS, MAX_CLUSTERS = 16, 256  # a small collection still starts with a spread of photos
KMEANS_SAMPLE = 20_000  # k-means fits on at most this many vectors, then assigns them all
KMEANS_ITERATIONS = 12


@dataclass(frozen=True)
class Clusters:
    """Each indexed photo's k-means cluster and its similarity to the cluster's centre."""

    ids: npt.NDArray[np.int64]
    cluster: npt.NDArray[np.int64]
    closeness: npt.NDArray[np.float32]


def cluster_count(n: int) -> int:
    return int(min(n, max(MIN_CLUSTERS, min(MAX_CLUSTERS, round(n * CLUSTER_SHARE)))))


def kmeans(ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32], seed: int = 0) -> Clusters:
    """Spherical k-means (cosine) with k-means++ seeding, deterministic for a seed."""
    n = len(ids)
    if n == 0:
        return Clusters(ids, np.zeros(0, np.int64), np.zeros(0, np.float32))
    rng = np.random.default_rng(seed)
    k = cluster_count(n)
    sample = vectors[np.sort(rng.permutation(n)[:KMEANS_SAMPLE])] if n > KMEANS_SAMPLE else vectors
    centres = [sample[rng.integers(len(sample))]]
    nearest = 1 - sample @ centres[0]
    for _ in range(1, k):
        p = np.maximum(nearest, 0) ** 2
        pick = rng.choice(len(sample), p=p / p.sum()) if p.sum() > 0 else rng.integers(len(sample))
        centres.append(sample[pick])
        nearest = np.minimum(nearest, 1 - sample @ sample[pick])
    c = np.array(centres, dtype=np.float32)
    for _ in range(KMEANS_ITERATIONS):
        assign = np.argmax(sample @ c.T, axis=1)
        for j in range(k):
            members = sample[assign == j]
            if len(members):
                m = members.sum(axis=0)
                c[j] = m / max(float(np.linalg.norm(m)), 1e-12)
    cluster = np.empty(n, dtype=np.int64)
    closeness = np.empty(n, dtype=np.float32)
    for start in range(0, n, 8192):
        sims = vectors[start : start + 8192] @ c.T
        cluster[start : start + 8192] = sims.argmax(axis=1)
        closeness[start : start + 8192] = sims.max(axis=1)
    return Clusters(ids, cluster, closeness)


def queue_order(
    candidates: npt.NDArray[np.int64],
    labels: npt.NDArray[np.int64],
    margins: npt.NDArray[np.float64],
    labelled: npt.NDArray[np.int64],
    clusters: Clusters,
    near_labelled: npt.NDArray[np.float64] | None = None,
) -> npt.NDArray[np.int64]:
    """Every candidate id, best to label first.

    `candidates` are the unlabelled photos, with their suggested class code (`labels`, -1 for none)
    and margin; `labelled` the ids already labelled; `near_labelled` each candidate's highest
    cosine to a labelled photo (those at the near-duplicate threshold go last).
    """
    candidates = np.asarray(candidates, dtype=np.int64)
    if not len(candidates):
        return candidates
    dup = (
        np.asarray(near_labelled) >= NEAR_DUPLICATE
        if near_labelled is not None
        else np.zeros(len(candidates), bool)
    )
    position = {int(i): j for j, i in enumerate(clusters.ids)}
    where = np.array([position.get(int(i), -1) for i in candidates])
    cluster = np.where(where >= 0, clusters.cluster[np.maximum(where, 0)], -1)
    closeness = np.where(where >= 0, clusters.closeness[np.maximum(where, 0)], -np.inf)

    # 1. A typical photo of each cluster no label reaches yet, biggest cluster first.
    lab_pos = [position[int(i)] for i in labelled if int(i) in position]
    covered = set(clusters.cluster[lab_pos].tolist())
    sizes = np.bincount(clusters.cluster, minlength=int(clusters.cluster.max(initial=0)) + 1)
    first: list[int] = []
    eligible = (cluster >= 0) & ~dup
    for c in np.argsort(-sizes, kind="stable"):
        if c in covered or sizes[c] == 0:
            continue
        members = np.flatnonzero(eligible & (cluster == c))
        if len(members):
            first.append(int(members[np.argmax(closeness[members])]))

    # 2. Lowest margin, one from each suggested class in turn (the class with the lowest margin first).
    chosen = np.zeros(len(candidates), bool)
    chosen[first] = True
    rest = np.flatnonzero(~chosen & ~dup)
    queues = []
    for code in np.unique(labels[rest]):
        members = rest[labels[rest] == code]
        queues.append(members[np.lexsort((candidates[members], margins[members]))])
    queues.sort(key=lambda q: (margins[q[0]], candidates[q[0]]))
    turns: list[int] = []
    longest = max((len(q) for q in queues), default=0)
    for r in range(longest):
        turns.extend(int(q[r]) for q in queues if r < len(q))

    # 3. Near-duplicates of labelled photos, least certain first.
    dups = np.flatnonzero(dup)
    dups = dups[np.lexsort((candidates[dups], margins[dups]))]
    return candidates[np.array(first + turns + dups.tolist(), dtype=np.int64)]
