"""A 2-D layout of vectors: PCA, then a neighbour-graph layout of a sample; the rest placed by their neighbours.

Two layout methods share everything around them:
- "graph" (the default): UMAP's own recipe (fuzzy k-NN graph, attraction along edges, repulsion
  from random points) written in numpy, so the default install needs neither numba nor scikit-learn;
- "umap": umap-learn (the optional `umap` extra) on the sample's PCA vectors, neighbours from FAISS.

Placing a photo that was not in the fitted sample (a photo added later, or one of the many beyond
the sample in a large library) is the same for both: its PCA vector's nearest sample points, and
the weighted mean of their positions with UMAP's fuzzy membership weights (what umap-learn's own
`transform` starts from). It is deterministic and cheap: one FAISS search per photo.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

UMAP = "umap"
GRAPH = "graph"
METHODS = (UMAP, GRAPH)

PCA_DIMS = 50  # UMAP's authors reduce to ~50 first: neighbours barely change, everything after is faster
FIT_SAMPLE = 20_000  # photos the layout is fitted on; the rest are placed (measured in bench/map.py)
NEIGHBOURS = 15  # graph neighbours while fitting (UMAP's default n_neighbors)
PLACE_NEIGHBOURS = 10  # sample points whose positions place a new photo
_CHUNK = 65_536
# UMAP's curve 1 / (1 + a d^(2b)) for min_dist 0.1, spread 1.0 (umap.umap_.find_ab_params).
_A, _B = 1.5769, 0.8951


class LayoutError(ValueError):
    """A layout cannot be computed as asked (unknown method, missing extra); the message says why."""


@dataclass(frozen=True)
class Projection:
    """PCA learnt on a sample: reduce(x) = (x - mean) @ components."""

    mean: npt.NDArray[np.float32]  # [D]
    components: npt.NDArray[np.float32]  # [D, P]

    def reduce(self, vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        out = (np.asarray(vectors, dtype=np.float32) - self.mean) @ self.components
        return np.ascontiguousarray(out, dtype=np.float32)


@dataclass(frozen=True)
class Fit:
    """What placing new photos needs: the projection and the fitted sample's vectors and positions."""

    method: str
    projection: Projection
    sample_ids: npt.NDArray[np.int64]  # [S]
    sample_reduced: npt.NDArray[np.float32]  # [S, P]
    sample_xy: npt.NDArray[np.float32]  # [S, 2], within [-1, 1]


def available_methods() -> tuple[str, ...]:
    """The methods this installation can run."""
    # Found, not imported: importing umap-learn compiles numba code (seconds, minutes the first time).
    return METHODS if importlib.util.find_spec("umap") is not None else (GRAPH,)


def default_method() -> str:
    # graph: as good as umap-learn on clothing_small and faster on 2 cores (bench/map.py), no numba.
    return GRAPH


def check_method(method: str | None) -> str:
    """`method`, or the default when None. Raises LayoutError when it cannot run here."""
    if method is None:
        return default_method()
    if method not in METHODS:
        raise LayoutError(f"unknown layout method {method!r}: one of {', '.join(METHODS)}")
    if method not in available_methods():
        raise LayoutError("the umap method needs umap-learn: pip install 'lookalike[umap]'")
    return method


# -- PCA --------------------------------------------------------------------------------------------


def learn_projection(sample: npt.NDArray[np.float32], dims: int = PCA_DIMS) -> Projection:
    """PCA of a sample [S, D] down to min(dims, D, S) components (eigenvectors of the covariance)."""
    sample = np.asarray(sample, dtype=np.float64)
    mean = sample.mean(axis=0)
    centred = sample - mean
    # D x D covariance and its eigenvectors: one GEMM, light on memory whatever S is.
    values, vectors = np.linalg.eigh(centred.T @ centred)
    keep = max(1, min(dims, sample.shape[1], len(sample)))
    components = vectors[:, ::-1][:, :keep]
    # Fix each component's sign so the same data gives the same picture on every run.
    signs = np.sign(components[np.abs(components).argmax(axis=0), np.arange(keep)])
    components = components * np.where(signs == 0, 1, signs)
    return Projection(mean.astype(np.float32), np.ascontiguousarray(components, dtype=np.float32))


# -- neighbours and weights ------------------------------------------------------------------------------


def nearest(
    base: npt.NDArray[np.float32], queries: npt.NDArray[np.float32], k: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Exact Euclidean k-NN of `queries` among `base`: (distances, positions), nearest first."""
    import faiss

    index = faiss.IndexFlatL2(base.shape[1])
    index.add(np.ascontiguousarray(base, dtype=np.float32))
    d2, idx = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return np.sqrt(np.maximum(d2, 0)), idx.astype(np.int64)


def fuzzy_weights(dists: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """UMAP's membership strengths of each row's neighbours (distances ascending, self excluded).

    w = exp(-(d - rho) / sigma): rho is the nearest neighbour's distance (so it always gets 1),
    sigma is found by bisection so that each row's weights sum to log2(k).
    """
    dists = np.asarray(dists, dtype=np.float64)
    n, k = dists.shape
    rho = dists[:, :1]
    excess = np.maximum(dists - rho, 0.0)
    target = math.log2(max(k, 2))
    lo = np.zeros(n)
    hi = np.full(n, np.inf)
    sigma = np.ones(n)
    for _ in range(64):
        total = np.exp(-excess / sigma[:, None]).sum(axis=1)
        high = total > target
        hi = np.where(high, sigma, hi)
        lo = np.where(high, lo, sigma)
        sigma = np.where(np.isinf(hi), sigma * 2, (lo + hi) / 2)
    floor = 1e-3 * max(float(dists.mean()), 1e-12)  # umap-learn's MIN_K_DIST_SCALE
    sigma = np.maximum(sigma, floor)
    return np.exp(-excess / sigma[:, None]).astype(np.float32)


def _knn_graph(reduced: npt.NDArray[np.float32], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each point's k nearest other points: (distances [n, k], positions [n, k])."""
    n = len(reduced)
    dists, idx = nearest(reduced, reduced, min(k + 1, n))
    # Drop each row's own entry (the first, except among exact duplicates: then whichever it is).
    own = idx == np.arange(n)[:, None]
    own[~own.any(axis=1), -1] = True
    keep = ~own
    return dists[keep].reshape(n, -1), idx[keep].reshape(n, -1)


# -- fitting ----------------------------------------------------------------------------------------


def fit(
    ids: npt.NDArray[np.int64],
    vectors: npt.NDArray[np.float32] | None = None,
    *,
    method: str | None = None,
    projection: Projection | None = None,
    reduced: npt.NDArray[np.float32] | None = None,
    seed: int = 0,
) -> Fit:
    """Fit a layout on these photos (a sample of at most FIT_SAMPLE, or all of a small library).

    Give either `vectors` [S, D] or, with the projection already learnt, their `reduced` vectors.
    Raises LayoutError for a method this installation cannot run.
    """
    method = check_method(method)
    ids = np.asarray(ids, dtype=np.int64)
    if projection is None:
        if vectors is None:
            raise ValueError("fit needs the vectors to learn a projection")
        projection = learn_projection(vectors)
    if reduced is None:
        reduced = projection.reduce(vectors)  # type: ignore[arg-type]
    n = len(ids)
    if n < 4:
        # Too few for a neighbour graph: the first principal components say all there is.
        xy = np.zeros((n, 2), dtype=np.float32)
        xy[:, : min(2, reduced.shape[1])] = reduced[:, :2]
    elif method == UMAP:
        xy = _umap_layout(reduced, seed)
    else:
        xy = graph_layout(reduced, seed=seed)
    return Fit(method, projection, ids, reduced, normalise(xy))


def normalise(xy: npt.NDArray) -> npt.NDArray[np.float32]:
    """Centred and scaled so the longer side spans [-1, 1] (the aspect ratio is kept)."""
    xy = np.asarray(xy, dtype=np.float64)
    if not len(xy):
        return xy.astype(np.float32).reshape(0, 2)
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    centre = (lo + hi) / 2
    half = float((hi - lo).max()) / 2
    return ((xy - centre) / (half if half > 0 else 1.0)).astype(np.float32)


def _umap_layout(reduced: npt.NDArray[np.float32], seed: int) -> npt.NDArray[np.float32]:
    import umap  # the optional extra; check_method has made sure it is here

    n = len(reduced)
    k = min(NEIGHBOURS, n - 1)
    dists, idx = _knn_graph(reduced, k)
    # umap-learn wants each point's own entry first; FAISS gives the neighbours in no time,
    # and nearest-neighbour descent (pynndescent) would be the slowest part of a fit here.
    knn_idx = np.hstack([np.arange(n)[:, None], idx])
    knn_d = np.hstack([np.zeros((n, 1), np.float32), dists])
    model = umap.UMAP(
        n_neighbors=k + 1, min_dist=0.1, init="pca" if n > 10_000 else "spectral",
        precomputed_knn=(knn_idx, knn_d, None), n_jobs=-1, low_memory=True, random_state=None,
    )
    # UMAP warns that precomputed neighbours with random_state=None cannot be reproduced: known.
    return model.fit_transform(reduced).astype(np.float32)


def graph_layout(
    reduced: npt.NDArray[np.float32], *, k: int = NEIGHBOURS, epochs: int | None = None, seed: int = 0
) -> npt.NDArray[np.float32]:
    """UMAP's optimisation in numpy: edges of the fuzzy k-NN graph attract, random pairs repel.

    Each epoch moves every point once by the sum of its clipped gradients (umap-learn moves it
    after each edge, which numpy cannot do fast); the step is divided by the point's number of
    updates so that well-connected points do not overshoot.
    """
    rng = np.random.default_rng(seed)
    n = len(reduced)
    dists, idx = _knn_graph(reduced, min(k, n - 1))
    weights = fuzzy_weights(dists)
    heads, tails, w = _symmetrise(np.repeat(np.arange(n), idx.shape[1]), idx.ravel(), weights.ravel(), n)
    epochs = epochs or (500 if n <= 10_000 else 200)
    keep = w >= w.max() / epochs  # umap-learn drops edges too weak to be sampled once
    heads, tails, w = heads[keep], tails[keep], w[keep]
    # Start from the first two principal components, spread as umap-learn spreads its start.
    y = reduced[:, :2].astype(np.float64).copy()
    y = 10 * (y - y.mean(axis=0)) / max(float(np.abs(y).max()), 1e-12)
    y += rng.normal(scale=1e-4, size=y.shape)
    negatives = 5
    for epoch in range(epochs):
        rate = 1.0 - epoch / epochs
        picked = rng.random(len(w)) < w  # an edge of weight w takes part in a share w of epochs
        h, t = heads[picked], tails[picked]
        grad = np.zeros_like(y)
        count = np.zeros(n)
        # Attraction along the edge, both ends.
        d = y[h] - y[t]
        d2 = (d * d).sum(axis=1)
        safe = np.maximum(d2, 1e-12)
        coef = -2.0 * _A * _B * safe ** (_B - 1.0) / (1.0 + _A * safe**_B)
        g = np.clip(coef[:, None] * d, -4, 4) * (d2 > 0)[:, None]
        _scatter(grad, h, g)
        _scatter(grad, t, -g)
        count += np.bincount(h, minlength=n) + np.bincount(t, minlength=n)
        # Repulsion of the head from random points.
        hn = np.repeat(h, negatives)
        tn = rng.integers(0, n, len(hn))
        d = y[hn] - y[tn]
        d2 = (d * d).sum(axis=1)
        coef = 2.0 * _B / ((0.001 + d2) * (1.0 + _A * d2**_B))
        g = np.clip(coef[:, None] * d, -4, 4) * (hn != tn)[:, None]
        _scatter(grad, hn, g)
        y += rate * grad / np.sqrt(np.maximum(count, 1.0))[:, None]
    return y.astype(np.float32)


def _symmetrise(heads, tails, w, n: int):
    """The fuzzy union of a directed graph: an undirected edge gets a + b - a*b."""
    lo, hi = np.minimum(heads, tails), np.maximum(heads, tails)
    key = lo.astype(np.int64) * n + hi
    forward = heads < tails
    keys, inverse = np.unique(key, return_inverse=True)
    a = np.bincount(inverse, weights=w * forward, minlength=len(keys))
    b = np.bincount(inverse, weights=w * ~forward, minlength=len(keys))
    return keys // n, keys % n, a + b - a * b


def _scatter(out: np.ndarray, rows: np.ndarray, values: np.ndarray) -> None:
    n = len(out)
    out[:, 0] += np.bincount(rows, weights=values[:, 0], minlength=n)
    out[:, 1] += np.bincount(rows, weights=values[:, 1], minlength=n)


# -- placing ----------------------------------------------------------------------------------------


def place(fit: Fit, reduced: npt.NDArray[np.float32], k: int = PLACE_NEIGHBOURS) -> npt.NDArray[np.float32]:
    """Positions [N, 2] of photos from their reduced vectors: the weighted mean of their nearest
    fitted points' positions (weights as in fuzzy_weights: the nearest counts fully)."""
    reduced = np.asarray(reduced, dtype=np.float32)
    out = np.empty((len(reduced), 2), dtype=np.float32)
    if not len(reduced):
        return out
    k = max(1, min(k, len(fit.sample_ids)))
    import faiss

    index = faiss.IndexFlatL2(fit.sample_reduced.shape[1])
    index.add(np.ascontiguousarray(fit.sample_reduced))
    for start in range(0, len(reduced), _CHUNK):
        part = np.ascontiguousarray(reduced[start : start + _CHUNK])
        d2, idx = index.search(part, k)
        w = fuzzy_weights(np.sqrt(np.maximum(d2, 0))) if k > 1 else np.ones_like(d2)
        xy = fit.sample_xy[idx]  # [m, k, 2]
        out[start : start + len(part)] = (w[:, :, None] * xy).sum(axis=1) / w.sum(axis=1)[:, None]
    return out


# -- whole collections, in chunks -------------------------------------------------------------------------


Chunks = Callable[[], Iterable[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]]]
Fetch = Callable[[npt.NDArray[np.int64]], tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]]


@dataclass(frozen=True)
class Layout:
    fit: Fit
    ids: npt.NDArray[np.int64]  # every photo laid out, ascending
    xy: npt.NDArray[np.float32]  # [N, 2]


def sample_positions(n: int, size: int, seed: int = 0) -> npt.NDArray[np.int64]:
    """`size` positions out of range(n), ascending (all of them when n <= size)."""
    if n <= size:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False)).astype(np.int64)


def lay_out(
    ids: npt.NDArray[np.int64], chunks: Chunks, *, method: str | None = None, sample: int = FIT_SAMPLE,
    seed: int = 0, fetch: Fetch | None = None,
) -> Layout:
    """Fit on a sample of `ids` and place the rest, reading the vectors chunk by chunk.

    `ids` are every photo's id, ascending; `chunks()` yields (ids, vectors) in the same order.
    `fetch(ids)` returns (ids, vectors) of the sample (default: filtered out of `chunks()`).
    Memory stays at the sample's vectors plus a chunk, so a million photos fit in a few hundred MB.
    """
    method = check_method(method)
    ids = np.asarray(ids, dtype=np.int64)
    chosen = ids[sample_positions(len(ids), sample, seed)]
    if fetch is not None:
        got, sample_matrix = fetch(chosen)
    else:
        parts = [(i[np.isin(i, chosen)], v[np.isin(i, chosen)]) for i, v in chunks()]
        got = np.concatenate([p[0] for p in parts])
        sample_matrix = np.concatenate([p[1] for p in parts])
    if not np.array_equal(got, chosen):
        raise LayoutError("the photos changed while the layout was computed: try again")
    projection = learn_projection(sample_matrix)
    sample_reduced = projection.reduce(sample_matrix)
    del sample_matrix
    layout_fit = fit(chosen, method=method, projection=projection, reduced=sample_reduced, seed=seed)
    out_ids, out_xy = [], []
    for part_ids, part_vectors in chunks():
        out_ids.append(part_ids)
        at = np.minimum(np.searchsorted(chosen, part_ids), len(chosen) - 1)
        hit = chosen[at] == part_ids
        xy = np.empty((len(part_ids), 2), dtype=np.float32)
        xy[hit] = layout_fit.sample_xy[at[hit]]  # fitted photos keep their fitted place
        xy[~hit] = place(layout_fit, projection.reduce(part_vectors[~hit]))
        out_xy.append(xy)
    all_ids = np.concatenate(out_ids) if out_ids else np.zeros(0, np.int64)
    all_xy = np.concatenate(out_xy) if out_xy else np.zeros((0, 2), np.float32)
    return Layout(layout_fit, all_ids, all_xy)


def in_chunks(
    ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32], size: int = _CHUNK
) -> Chunks:
    """A `chunks` callable over arrays already in memory."""

    def chunks() -> Iterator[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]]:
        for start in range(0, len(ids), size):
            yield ids[start : start + size], vectors[start : start + size]

    return chunks
