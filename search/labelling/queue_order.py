"""The labelling queue's order: photos that cover the collection first, then the least certain, clusters in turn.

Pure arrays in, ids out, so the web queue, `lookalike queue` and the label simulation share one order:
1. one typical photo (the one nearest its k-means centre) of each cluster that has no label yet,
   biggest cluster first: a cold start learns every kind of photo early;
2. then the lowest margin (winner's probability minus runner-up's) by the current model, in pools
   of the POOL_SHARE least certain, each pool taken one photo from each cluster in turn;
3. near-duplicates of photos already labelled last: they get their twin's label anyway.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from search.duplicates.candidates import DEFAULT_THRESHOLD as NEAR_DUPLICATE

CLUSTER_SHARE = 0.01  # one cluster per this share of the collection (its 1 % most typical photos)
MIN_CLUSTERS, MAX_CLUSTERS = 16, 256  # a small collection still starts with a spread of photos
KMEANS_SAMPLE = 20_000  # k-means fits on at most this many vectors, then assigns them all
KMEANS_ITERATIONS = 12
# After the cold start the least certain photos come in pools of this share of the unlabelled ones
# (lowest margins first; about two a cluster at CLUSTER_SHARE); within a pool, one from each k-means
# cluster in turn, so that what a person labels between two retrainings spans the regions the model
# doubts instead of one confusing corner (Cluster-Margin, Citovsky et al. 2021). On clothing_small
# (3 seeds) 95 % of the collection was right after 893 hand labels on average, against 969 by the
# lowest margin alone and 1,083 with the suggested classes taking turns over the whole queue, the
# earlier order, which brought confident photos of the classes with few doubts forward
# (BENCHMARKS.md, "The queue's pools").
POOL_SHARE = 0.02


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
    positions = sample_positions(len(ids), seed)
    centres = fit_centres(vectors[positions] if positions is not None else vectors, cluster_count(len(ids)), seed)
    return assign(centres, [(ids, vectors)])


def sample_positions(n: int, seed: int = 0) -> npt.NDArray[np.int64] | None:
    """The rows k-means fits on (sorted), or None for all of them."""
    if n <= KMEANS_SAMPLE:
        return None
    return np.sort(np.random.default_rng(seed).permutation(n)[:KMEANS_SAMPLE])


def fit_centres(sample: npt.NDArray[np.float32], k: int, seed: int = 0) -> npt.NDArray[np.float32]:
    """k unit centres fitted on `sample`: k-means++ seeding, then KMEANS_ITERATIONS rounds."""
    if not len(sample):
        return np.zeros((0, sample.shape[1]), dtype=np.float32)
    rng = np.random.default_rng(seed)
    centres = [sample[rng.integers(len(sample))]]
    nearest = 1 - sample @ centres[0]
    for _ in range(1, k):
        p = np.maximum(nearest, 0) ** 2
        pick = rng.choice(len(sample), p=p / p.sum()) if p.sum() > 0 else rng.integers(len(sample))
        centres.append(sample[pick])
        nearest = np.minimum(nearest, 1 - sample @ sample[pick])
    c = np.array(centres, dtype=np.float32)
    for _ in range(KMEANS_ITERATIONS):
        chosen = np.argmax(sample @ c.T, axis=1)
        for j in range(k):
            members = sample[chosen == j]
            if len(members):
                m = members.sum(axis=0)
                c[j] = m / max(float(np.linalg.norm(m)), 1e-12)
    return c


def assign(centres: npt.NDArray[np.float32],
           chunks: Iterable[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]]) -> Clusters:
    """Each vector's nearest centre and its cosine to it, from (ids, vectors) chunks in id order."""
    ids, cluster, closeness = [], [], []
    for chunk_ids, vectors in chunks:
        for start in range(0, len(chunk_ids), 8192):
            sims = vectors[start : start + 8192] @ centres.T
            ids.append(chunk_ids[start : start + 8192])
            cluster.append(sims.argmax(axis=1) if sims.shape[1] else np.zeros(len(sims), np.int64))
            closeness.append(sims.max(axis=1) if sims.shape[1] else np.zeros(len(sims), np.float32))
    if not ids:
        return Clusters(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    return Clusters(np.concatenate(ids).astype(np.int64), np.concatenate(cluster).astype(np.int64),
                    np.concatenate(closeness).astype(np.float32))


def queue_order(
    candidates: npt.NDArray[np.int64],
    margins: npt.NDArray[np.float64],
    labelled: npt.NDArray[np.int64],
    clusters: Clusters,
    near_labelled: npt.NDArray[np.float64] | None = None,
) -> npt.NDArray[np.int64]:
    """Every candidate id, best to label first.

    `candidates` are the unlabelled photos, with the margin of their suggestion (0 for none);
    `labelled` the ids already labelled; `near_labelled` each candidate's highest cosine to a
    labelled photo (those at the near-duplicate threshold go last).
    """
    candidates = np.asarray(candidates, dtype=np.int64)
    if not len(candidates):
        return candidates
    dup = (
        np.asarray(near_labelled) >= NEAR_DUPLICATE
        if near_labelled is not None
        else np.zeros(len(candidates), bool)
    )
    where = _positions(clusters.ids, candidates)
    cluster = np.where(where >= 0, clusters.cluster[np.maximum(where, 0)], -1)
    closeness = np.where(where >= 0, clusters.closeness[np.maximum(where, 0)], -np.inf)

    # 1. A typical photo of each cluster no label reaches yet, biggest cluster first.
    lab_pos = _positions(clusters.ids, np.asarray(labelled, dtype=np.int64))
    lab_pos = lab_pos[lab_pos >= 0]
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

    # 2. Lowest margin first, in pools: within each, one photo from each cluster in turn.
    chosen = np.zeros(len(candidates), bool)
    chosen[first] = True
    rest = np.flatnonzero(~chosen & ~dup)
    rest = rest[np.lexsort((candidates[rest], margins[rest]))]
    size = max(1, round(POOL_SHARE * len(candidates)))
    turns = [_in_turn(pool, cluster[pool]) for pool in np.split(rest, range(size, len(rest), size))]

    # 3. Near-duplicates of labelled photos, least certain first.
    dups = np.flatnonzero(dup)
    dups = dups[np.lexsort((candidates[dups], margins[dups]))]
    return candidates[np.concatenate([np.array(first, dtype=np.int64), *turns, dups])]


def _in_turn(rows: npt.NDArray[np.int64], groups: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """`rows` (in their order) taken one from each group in turn, the groups in the order they first appear."""
    _, first_at, group = np.unique(groups, return_index=True, return_inverse=True)
    by_group = np.argsort(group, kind="stable")  # each group's rows together, in their order
    counts = np.bincount(group)
    rank = np.empty(len(rows), dtype=np.int64)  # a row's place among its group's rows
    rank[by_group] = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    return rows[np.lexsort((first_at[group], rank))]


def _positions(ids: npt.NDArray[np.int64], wanted: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Each wanted id's index in `ids`, -1 where it is not there (a binary search, not a dict of a million)."""
    if not len(ids):
        return np.full(len(wanted), -1, dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    at = np.minimum(np.searchsorted(ids[order], wanted), len(ids) - 1)
    return np.where(ids[order][at] == wanted, order[at], -1)
