"""Label spreading (Zhou et al. 2004) over the stored k-NN lists: the unlabelled photos carry labels too.

    F <- alpha * S F + (1 - alpha) * Y,    S = D^-1/2 W D^-1/2

W is the stored neighbour lists made symmetric (W + W^T), an edge weighing max(cosine, 0) ** GAMMA
(the k-NN graph of Iscen et al. 2019, "Label propagation for deep semi-supervised learning"). Y
holds the seeds, each class's seeds summing to one, so a class labelled twice as often does not
spread twice as far. ITERATIONS steps of the iteration from F = Y: a truncated series of the closed
form (1 - alpha S)^-1 Y, which at alpha near 1 needs many more steps to converge than help.
Each class's column of F is then scaled to the same total (class mass normalisation, Zhu et al.
2003: at alpha near 1, F drifts towards the graph's stationary distribution and the class whose
seeds sit on its hubs took 70 % of the sample library), and each photo's row, normalised, is its
class distribution; a photo no seed reaches has a row of zeros (no prediction).

alpha is chosen by cross-validation from ALPHAS (`learned_head.cross_validate`): on the 120 sample
photos with 3 labels a class, 0.5 labelled 76 % of the rest right and 0.99 only 59 %; on larger
collections the longer reach of 0.99 is what lets spreading beat the probe.

Never an n x n matrix: the graph is the lists' E = n * k edges twice, held as CSR arrays (int32
columns, float32 weights, 8 bytes an entry: 320 MB at a million photos and k = 20). Each step is a
sparse product: torch's CSR matmul when torch is already imported (training the head imports it),
else numpy, gathering ROW_CHUNK rows at a time, so reading suggestions never pays torch's start-up.
At 200,000 photos (k = 20, 17 classes, 2 cores) one step took 0.10 s with torch, 1.5 s with numpy.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from indexer.library import Library
from search.neighbour_lists import NEIGHBOURS_STATE

ALPHA = 0.99  # the share of a photo's scores that comes from its neighbours (Zhou's and Iscen's value)
ALPHAS = (0.5, 0.9, ALPHA)  # tried by cross-validation
# Fewer photos than this: no spreading. In the 120 sample photos each k = 20 list covers a sixth of
# the collection and spreading mixes the classes: with 4 labels a class, cross-validation ranked it
# first (0.60 against the probe's 0.48 on 2-3 labels a class) but it labelled 69 % of the rest right,
# the probe trained on all 40 labels over 80 %. clothing_small (3,781 photos) gains from it.
SPREAD_MIN_PHOTOS = 500
ALPHA_SEARCH_MAX = 100_000  # photos; a larger graph tries ALPHA alone (a spreading there takes seconds)
GAMMA = 3  # an edge weighs cosine ** GAMMA: near neighbours count far more than the k-th
ITERATIONS = 20
ROW_CHUNK = 65_536  # rows gathered at a time: ROW_CHUNK * 2k * C floats
READ_CHUNK = 1_000_000  # list entries read from SQLite at a time


@dataclass(frozen=True)
class Graph:
    """The symmetric k-NN graph of the indexed photos in CSR form, normalised (S above)."""

    ids: npt.NDArray[np.int64]  # image id of each node, ascending
    indptr: npt.NDArray[np.int64]  # [n + 1]
    columns: npt.NDArray[np.int32]  # [2E] node positions
    weights: npt.NDArray[np.float32]  # [2E] D^-1/2 W D^-1/2

    @property
    def size(self) -> int:
        return len(self.ids)

    def nodes(self, image_ids: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Each image id's node position, -1 for an id not in the graph."""
        image_ids = np.asarray(image_ids, dtype=np.int64)
        pos = np.searchsorted(self.ids, image_ids)
        pos = np.minimum(pos, max(len(self.ids) - 1, 0))
        found = (len(self.ids) > 0) & (self.ids[pos] == image_ids) if len(self.ids) else np.zeros(len(image_ids), bool)
        return np.where(found, pos, -1)


def build_graph(image_ids: npt.ArrayLike, neighbour_ids: npt.ArrayLike, scores: npt.ArrayLike,
                nodes: npt.ArrayLike | None = None) -> Graph:
    """The normalised symmetric graph of these list entries (image -> neighbour, cosine).

    `nodes`: every photo's image id (default: those the entries name); entries naming others are dropped.
    """
    a = np.asarray(image_ids, dtype=np.int64)
    b = np.asarray(neighbour_ids, dtype=np.int64)
    w = np.maximum(np.asarray(scores, dtype=np.float32), 0) ** GAMMA
    ids = np.unique(np.concatenate([a, b])) if nodes is None else np.unique(np.asarray(nodes, dtype=np.int64))
    n = len(ids)
    if n == 0:
        return Graph(ids, np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32))
    pa, pb = np.searchsorted(ids, a), np.searchsorted(ids, b)
    pa_ok, pb_ok = np.minimum(pa, n - 1), np.minimum(pb, n - 1)
    keep = (ids[pa_ok] == a) & (ids[pb_ok] == b) & (pa_ok != pb_ok) & (w > 0)
    pa, pb, w = pa_ok[keep].astype(np.int32), pb_ok[keep].astype(np.int32), w[keep]
    del a, b, keep
    rows = np.concatenate([pa, pb])
    cols = np.concatenate([pb, pa])
    weights = np.concatenate([w, w])
    del pa, pb, w
    order = np.argsort(rows, kind="stable")
    rows, cols, weights = rows[order], cols[order], weights[order]
    del order
    degree = np.bincount(rows, weights=weights, minlength=n)
    inv_sqrt = np.where(degree > 0, 1 / np.sqrt(np.maximum(degree, 1e-30)), 0).astype(np.float32)
    weights *= inv_sqrt[rows] * inv_sqrt[cols]
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    return Graph(ids, indptr, cols, weights)


def load_graph(library: Library, k: int) -> Graph | None:
    """The graph of the library's stored lists (their first k entries), or None when the lists are
    shorter than k or older than the library's vectors."""
    state = library.state(NEIGHBOURS_STATE)
    if state.get("k", 0) < k or state.get("vectors") != library.vectors_fingerprint():
        return None
    parts: list[npt.NDArray] = []
    raw = library.engine.raw_connection()  # plain sqlite3 tuples: SQLAlchemy rows made numpy 10x slower
    try:
        cursor = raw.cursor()
        cursor.execute("SELECT image_id, neighbour_id, score FROM neighbours WHERE rank < ?", (int(k),))
        while True:
            rows = cursor.fetchmany(READ_CHUNK)
            if not rows:
                break
            parts.append(np.array(rows, dtype=np.float64))
        cursor.execute("SELECT image_id FROM neighbour_sources ORDER BY image_id")
        ids = np.fromiter((r[0] for r in cursor.fetchall()), dtype=np.int64)
        cursor.close()
    finally:
        raw.close()
    entries = np.concatenate(parts) if parts else np.zeros((0, 3))
    return build_graph(entries[:, 0].astype(np.int64), entries[:, 1].astype(np.int64), entries[:, 2], nodes=ids)


def worth_spreading(graph: Graph | None) -> bool:
    """Whether the graph is large enough for label spreading to be among the methods."""
    return graph is not None and graph.size >= SPREAD_MIN_PHOTOS


def alphas_for(graph: Graph) -> tuple[float, ...]:
    """The alphas cross-validation tries on this graph."""
    return ALPHAS if graph.size <= ALPHA_SEARCH_MAX else (ALPHA,)


def spread(graph: Graph, seeds: npt.ArrayLike, seed_codes: npt.ArrayLike, n_classes: int,
           alpha: float = ALPHA, iterations: int = ITERATIONS, engine: str | None = None) -> npt.NDArray[np.float32]:
    """Every node's class distribution [n, C] spread from the seed nodes (rows of zeros: unreached).

    `engine`: "torch" or "numpy"; None: torch when it is already imported."""
    seeds = np.asarray(seeds, dtype=np.int64)
    seed_codes = np.asarray(seed_codes, dtype=np.int64)
    keep = seeds >= 0
    seeds, seed_codes = seeds[keep], seed_codes[keep]
    y = np.zeros((graph.size, n_classes), dtype=np.float32)
    if not len(seeds) or not graph.size:
        return y
    counts = np.bincount(seed_codes, minlength=n_classes).astype(np.float32)
    np.add.at(y, (seeds, seed_codes), 1 / counts[seed_codes])
    f = y.copy()
    base = (1 - alpha) * y
    step = _torch_step(graph) if (engine or ("torch" if "torch" in sys.modules else "numpy")) == "torch" else None
    for _ in range(iterations):
        f = alpha * (step(f) if step is not None else propagate(graph, f)) + base
    mass = f.sum(axis=0, keepdims=True)
    f = np.divide(f, mass, out=np.zeros_like(f), where=mass > 0)
    return normalise(f)


def _torch_step(graph: Graph):
    """S f as torch's CSR product (the same sums as `propagate`, in another order)."""
    import torch

    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        s = torch.sparse_csr_tensor(torch.from_numpy(graph.indptr), torch.from_numpy(graph.columns.astype(np.int64)),
                                    torch.from_numpy(graph.weights), size=(graph.size, graph.size),
                                    check_invariants=False)

    def step(f: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return (s @ torch.from_numpy(np.ascontiguousarray(f, dtype=np.float32))).numpy()

    return step


def propagate(graph: Graph, f: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """S f, ROW_CHUNK rows at a time."""
    out = np.zeros_like(f)
    for start in range(0, graph.size, ROW_CHUNK):
        stop = min(start + ROW_CHUNK, graph.size)
        lo, hi = graph.indptr[start], graph.indptr[stop]
        if hi == lo:
            continue
        gathered = f[graph.columns[lo:hi]]
        gathered *= graph.weights[lo:hi, None]
        # Sum each row's run of entries (rows with no entry stay 0).
        starts = graph.indptr[start:stop] - lo
        has = graph.indptr[start + 1 : stop + 1] > graph.indptr[start:stop]
        out[start:stop][has] = np.add.reduceat(gathered, starts[has], axis=0)
    return out


def normalise(f: npt.NDArray) -> npt.NDArray[np.float32]:
    """Rows summing to one; rows of zeros (and rounding dust) stay zeros."""
    total = f.sum(axis=1, keepdims=True)
    return np.divide(f, total, out=np.zeros_like(f), where=total > 1e-30).astype(np.float32)
