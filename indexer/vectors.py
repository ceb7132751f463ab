"""The FAISS file: vectors under their database ids, written atomically, rebuildable from SQLite.

The index type follows the library's size and a memory budget, as autofaiss' selection does
(`get_optimal_index_keys_v2`), but prefers exact search for as long as it stays fast, because
k-NN labelling and evaluation want exact neighbours:

    n <= FLAT_MAX_VECTORS and fits     -> flat     IndexIDMap2(IndexFlatIP), exact
    HNSW with M >= 8 fits the budget   -> hnsw     IndexIDMap2(IndexHNSWFlat), M <= 32
    8-bit codes fit                    -> ivf_sq8  IndexIVFScalarQuantizer (ids stored natively)
    otherwise                          -> ivf_pq   IndexIVFPQ, as many bytes per vector as fit

(At 1280-d and the default 4 GiB: flat to 50k, HNSW to ~825k (M from 32 down to 8 to fit),
IVF-SQ8 to ~3.3M, then PQ,
whose 256-byte codes cap recall@10 near 0.75: bench/index_types.py has the figures.)

Every approximate index is measured when it is built: recall@10 against exact search for a sample
of the stored vectors held out of the index, with its search parameter (efSearch, nprobe) raised
until it reaches RECALL_TARGET. That figure is recorded in the library's meta table by `describe()`.
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import faiss
import numpy as np
import numpy.typing as npt

from indexer.library_files import replace_durably

log = logging.getLogger(__name__)

FLAT = "flat"
HNSW = "hnsw"
IVF_SQ8 = "ivf_sq8"
IVF_PQ = "ivf_pq"
INDEX_TYPES = (FLAT, HNSW, IVF_SQ8, IVF_PQ)

# Exact search of 1280-d vectors costs ~0.2 ms per 1,000 on one core (bench/index_types.py: 20 ms
# at 100k), so 10 ms at this size; HNSW answers in ~0.1 ms at recall@10 0.95.
FLAT_MAX_VECTORS = 50_000
# Quantisers need enough points to train (autofaiss' quantization_threshold).
MIN_TRAIN_VECTORS = 10_000
DEFAULT_MEMORY_BUDGET = 4 << 30  # bytes the index may take in RAM
RECALL_TARGET = 0.95
HNSW_MAX_M = 32
HNSW_EF_CONSTRUCTION = 40  # FAISS's default; higher builds slower for little recall here
RECALL_QUERIES = 300  # stored vectors held out as queries when an index is measured
EF_SEARCH_STEPS = (16, 32, 64, 128, 256, 512, 1024)
NPROBE_STEPS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
PQ_BYTES = (256, 160, 128, 80, 64, 40, 32, 20, 16, 8)  # preferred code sizes, largest first


class DamagedIndexError(Exception):
    """A FAISS file that is not an index of this library: truncated, garbage, empty, another dimension."""


@dataclass(frozen=True)
class IndexPlan:
    """Which index to build for a library of `n` vectors of `dim` dimensions."""

    kind: str
    hnsw_m: int = 0
    nlist: int = 0
    pq_m: int = 0

    def key(self) -> str:
        """A FAISS-factory-like name, for people."""
        return {
            FLAT: "IDMap2,Flat",
            HNSW: f"IDMap2,HNSW{self.hnsw_m},Flat",
            IVF_SQ8: f"IVF{self.nlist},SQ8",
            IVF_PQ: f"IVF{self.nlist},PQ{self.pq_m}x8",
        }[self.kind]

    def estimated_bytes(self, n: int, dim: int) -> int:
        id_bytes = 8
        if self.kind == FLAT:
            return n * (4 * dim + id_bytes)
        if self.kind == HNSW:
            # level-0 links (2M) plus ~1/M of the upper levels, as autofaiss estimates
            return n * (4 * dim + 4 * 2 * self.hnsw_m + id_bytes + 12)
        code = dim if self.kind == IVF_SQ8 else self.pq_m
        return n * (code + id_bytes) + self.nlist * dim * 4


def ivf_nlist(n: int) -> int:
    """Inverted lists: ~2 sqrt(n) rounded to a power of two, at least 39 training points each."""
    nlist = 2 ** round(math.log2(max(16.0, 2 * math.sqrt(max(n, 1)))))
    while nlist > 16 and n < 39 * nlist:
        nlist //= 2
    return int(min(nlist, 65_536))


def plan_index(
    n: int, dim: int, memory_budget: int = DEFAULT_MEMORY_BUDGET, *, kind: str | None = None
) -> IndexPlan:
    """The index type for `n` vectors within `memory_budget` bytes, or the `kind` asked for."""
    if kind is not None and kind not in INDEX_TYPES:
        raise ValueError(f"unknown index type {kind!r}: one of {', '.join(INDEX_TYPES)}")
    nlist = ivf_nlist(n)
    if kind is None:
        if n < MIN_TRAIN_VECTORS or (
            n <= FLAT_MAX_VECTORS and IndexPlan(FLAT).estimated_bytes(n, dim) <= memory_budget
        ):
            return IndexPlan(FLAT)
        # The HNSW M that fits, as autofaiss: bytes per vector = 4 (d + 2M).
        m = int((memory_budget / (4 * n) - dim - 5) // 2)
        if m >= 8:
            return IndexPlan(HNSW, hnsw_m=min(m, HNSW_MAX_M))
        if IndexPlan(IVF_SQ8, nlist=nlist).estimated_bytes(n, dim) <= memory_budget:
            return IndexPlan(IVF_SQ8, nlist=nlist)
        kind = IVF_PQ
    if kind == FLAT:
        return IndexPlan(FLAT)
    if kind == HNSW:
        return IndexPlan(HNSW, hnsw_m=HNSW_MAX_M)
    if kind == IVF_SQ8:
        return IndexPlan(IVF_SQ8, nlist=nlist)
    # Sub-vectors of at least 4 dimensions: PQ training cost grows with m, quality hardly does.
    candidates = [m for m in PQ_BYTES if 4 * m <= dim and dim % m == 0] or [1]
    fitting = [
        m
        for m in candidates
        if IndexPlan(IVF_PQ, nlist=nlist, pq_m=m).estimated_bytes(n, dim) <= memory_budget
    ]
    return IndexPlan(IVF_PQ, nlist=nlist, pq_m=(fitting or candidates[-1:])[0])


@dataclass
class BuildStats:
    """What was measured while building: recall@10 against exact and the search parameter chosen."""

    recall_at_10: float | None = None
    search_param: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


class VectorIndex:
    """Inner-product FAISS index whose ids are `images.id`.

    flat and hnsw wrap their index in IndexIDMap2; the IVF types store the ids in their inverted
    lists (IndexIDMap2 over IVF would lose track of ids after `remove_ids`).
    Vectors are unit length, so inner product is cosine similarity.
    FAISS CPU indexes allow concurrent searches but not concurrent writes: the web process only reads.
    """

    def __init__(self, dim: int, index: faiss.Index | None = None) -> None:
        self.dim = dim
        self.index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        if self.index.d != dim:
            raise ValueError(f"FAISS index has dimension {self.index.d}, library says {dim}")
        self.kind = _kind_of(self.index)
        self.stats = BuildStats(recall_at_10=1.0 if self.kind == FLAT else None)

    @classmethod
    def empty(cls, dim: int) -> VectorIndex:
        return cls(dim)

    @classmethod
    def build(
        cls,
        dim: int,
        ids: npt.NDArray[np.int64],
        vectors: npt.NDArray[np.float32],
        *,
        kind: str | None = None,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        recall_target: float = RECALL_TARGET,
        plan: IndexPlan | None = None,
    ) -> VectorIndex:
        """A new index holding these vectors, its type chosen by `plan_index` unless given.

        Approximate indexes are tuned and measured before they are returned: a sample of the
        vectors is held out while the rest are added, serves as queries against exact search
        over the rest, and is added last. (Queries already in an index find their neighbourhood
        too easily: HNSW measured 0.95 that way and 0.83 on new queries.)
        """
        started = time.perf_counter()
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(ids), dim)
        plan = plan or plan_index(len(ids), dim, memory_budget, kind=kind)
        if plan.kind != FLAT and len(ids) < max(plan.nlist * 39, 256 if plan.pq_m else 0, 1000):
            log.info("%d vectors are too few to train %s: building flat", len(ids), plan.key())
            plan = IndexPlan(FLAT)
        index = cls(dim, _new_faiss_index(plan, dim))
        if plan.kind in (IVF_SQ8, IVF_PQ):
            train = vectors[_sample(len(ids), max(64 * plan.nlist, 256 * 64), seed=1)]
            index.index.train(train)
        held_out = np.zeros(len(ids), dtype=bool)
        if plan.kind != FLAT:
            held_out[_sample(len(ids), min(RECALL_QUERIES, len(ids) // 10), seed=2)] = True
        rest = np.flatnonzero(~held_out)
        for start in range(0, len(rest), 65_536):  # bounded temporary memory while adding
            part = rest[start : start + 65_536]
            index.add(ids[part], vectors[part])
        if plan.kind != FLAT:
            queries = vectors[held_out]
            # Exact top-10 among the rest, without copying the rest (GBs at 1M): search all, drop
            # the held-out rows (at most len(queries) of them precede a row's 10th outsider).
            _, found = faiss.knn(queries, vectors, 10 + len(queries), metric=faiss.METRIC_INNER_PRODUCT)
            exact = np.stack([row[~held_out[row]][:10] for row in found])
            index.tune(queries, ids[exact], recall_target)
            index.add(ids[held_out], queries)
        index.stats.seconds = time.perf_counter() - started
        log.info(
            "built %s of %d vectors in %.1fs: %s",
            plan.key(),
            len(ids),
            index.stats.seconds,
            index.describe(),
        )
        return index

    # -- facts ------------------------------------------------------------------------------------

    @property
    def supports_updates(self) -> bool:
        """Whether add/remove work in place; otherwise the library rebuilds from stored vectors.

        HNSW graphs cannot delete: `remove` turns such an index into a flat one (still correct)
        and `should_rebuild` then asks for a fresh HNSW when the file is next written.
        """
        return self.kind != HNSW

    def should_rebuild(self, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> bool:
        """Whether the library has outgrown (or shrunk below) this index's type or its IVF lists."""
        plan = plan_index(self.ntotal, self.dim, memory_budget)
        if plan.kind != self.kind:
            return True
        if self.kind in (IVF_SQ8, IVF_PQ):
            nlist = faiss.extract_index_ivf(self.index).nlist
            return not (plan.nlist / 4 <= nlist <= plan.nlist * 4)
        return False

    def describe(self) -> dict[str, object]:
        """Facts recorded in the library's meta table when the file is written."""
        facts: dict[str, object] = {
            "index_type": self.kind,
            "index_size": self.ntotal,
            "index_memory_bytes": self.memory_bytes(),
            "index_params": self.params(),
        }
        if self.stats.recall_at_10 is not None:
            facts["index_recall_at_10"] = round(self.stats.recall_at_10, 4)
        return facts

    def params(self) -> str:
        if self.kind == HNSW:
            hnsw = _swig(self._hnsw().hnsw)
            return f"HNSW{hnsw.nb_neighbors(1)},Flat efSearch={hnsw.efSearch}"
        if self.kind == IVF_SQ8:
            ivf = self._ivf()
            return f"IVF{ivf.nlist},SQ8 nprobe={ivf.nprobe}"
        if self.kind == IVF_PQ:
            ivf = self._ivf()
            assert isinstance(ivf, faiss.IndexIVFPQ)
            return f"IVF{ivf.nlist},PQ{ivf.pq.M}x{ivf.pq.nbits} nprobe={ivf.nprobe}"
        return "Flat"

    def memory_bytes(self) -> int:
        """Bytes the index holds in RAM (codes, links, ids, centroids), computed, not serialised."""
        n = self.ntotal
        if self.kind == FLAT:
            return n * (4 * self.dim + 8)
        if self.kind == HNSW:
            hnsw = _swig(self._hnsw().hnsw)
            links = hnsw.neighbors.size() * 4 + hnsw.offsets.size() * 8
            return n * (4 * self.dim + 4 + 8) + links
        ivf = self._ivf()
        return n * (ivf.code_size + 8) + ivf.nlist * self.dim * 4

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def ids(self) -> npt.NDArray[np.int64]:
        if self.kind in (IVF_SQ8, IVF_PQ):
            invlists = self._ivf().invlists
            assert invlists is not None  # an IVF index always has its lists
            parts = [
                faiss.rev_swig_ptr(invlists.get_ids(i), invlists.list_size(i)).copy()
                for i in range(invlists.nlist)
                if invlists.list_size(i)
            ]
            return (
                np.sort(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, np.int64)
            )
        return np.sort(faiss.vector_to_array(self._id_map().id_map).astype(np.int64))

    def cells(self) -> tuple[npt.NDArray[np.float32], list[npt.NDArray[np.int64]]]:
        """An IVF index's coarse centroids [nlist, dim] and the ids each inverted list holds."""
        if self.kind not in (IVF_SQ8, IVF_PQ):
            raise ValueError(f"a {self.kind} index has no cells")
        ivf = self._ivf()
        invlists = ivf.invlists
        assert invlists is not None and ivf.quantizer is not None  # an IVF index always has both
        centroids = ivf.quantizer.reconstruct_n(0, ivf.nlist)
        ids = [
            faiss.rev_swig_ptr(invlists.get_ids(i), invlists.list_size(i)).astype(np.int64)
            if invlists.list_size(i) else np.zeros(0, np.int64)
            for i in range(ivf.nlist)
        ]
        return centroids, ids

    # -- changes ----------------------------------------------------------------------------------

    def add(self, ids: npt.ArrayLike, vectors: npt.NDArray[np.float32]) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(ids):
            self.index.add_with_ids(vectors, ids)

    def remove(self, ids: npt.ArrayLike) -> int:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if not len(ids):
            return 0
        if self.kind == HNSW:
            self._hnsw_to_flat()
        return int(self.index.remove_ids(faiss.IDSelectorBatch(len(ids), faiss.swig_ptr(ids))))

    def _hnsw_to_flat(self) -> None:
        # The graph's flat storage holds the exact vectors in insertion order, beside id_map.
        ids = faiss.vector_to_array(self._id_map().id_map).astype(np.int64)
        storage = self._hnsw().storage
        assert storage is not None  # IndexHNSWFlat keeps its vectors
        vectors = storage.reconstruct_n(0, self.ntotal) if len(ids) else None
        self.index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        self.kind = FLAT
        self.stats = BuildStats(recall_at_10=1.0)
        if vectors is not None:
            self.add(ids, vectors)

    # -- search -----------------------------------------------------------------------------------

    def search(
        self, queries: npt.NDArray[np.float32], k: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Top-k by cosine for each query row. Rows are padded with id -1 when k > ntotal.

        A query reaches only part of an approximate index: the vectors of IVF's `nprobe` nearest
        cells, HNSW's `efSearch` best candidates (at least k here). Where that part holds fewer
        than k (small cells, bursts of near-identical photos), FAISS pads the row: those rows are
        searched again reaching twice as far, until they are full or the whole index is reached.
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = max(1, min(int(k), max(self.ntotal, 1)))
        if self.kind == FLAT:
            return self.index.search(queries, k)
        # Per call, not set on the index: searches run concurrently.
        params: Any  # faiss's stubs lack SearchParametersHNSW
        if self.kind == HNSW:
            params, name, most = _swig(faiss).SearchParametersHNSW(), "efSearch", self.ntotal
            params.efSearch = max(_swig(self._hnsw().hnsw).efSearch, k)
        else:
            params, name, most = faiss.SearchParametersIVF(), "nprobe", self._ivf().nlist
            params.nprobe = self._ivf().nprobe
        scores, ids = self.index.search(queries, k, params=params)
        short = np.flatnonzero((ids < 0).any(axis=1))
        while len(short) and getattr(params, name) < most:
            setattr(params, name, min(2 * getattr(params, name), most))
            scores[short], ids[short] = self.index.search(queries[short], k, params=params)
            short = short[(ids[short] < 0).any(axis=1)]
        return scores, ids

    def range_search(
        self, queries: npt.NDArray[np.float32], threshold: float
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """(lims, scores, ids): query i's matches with cosine > threshold are [lims[i], lims[i+1])."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        return self.index.range_search(queries, float(threshold))

    def tune(
        self, queries: npt.NDArray[np.float32], exact: npt.NDArray[np.int64], recall_target: float
    ) -> float:
        """Raise efSearch / nprobe until recall@10 reaches the target; returns the recall reached.

        `exact` holds each query's true top-10 ids. Stops early when a step gains nothing
        (quantised codes, not the search, then limit recall).
        """
        steps: tuple[int, ...]
        if self.kind == HNSW:
            hnsw = self._hnsw().hnsw
            name, steps = "efSearch", EF_SEARCH_STEPS
        else:
            ivf = self._ivf()
            name = "nprobe"
            steps = tuple(p for p in NPROBE_STEPS if p < ivf.nlist) + (ivf.nlist,)

        def measure(value: int) -> float:
            if self.kind == HNSW:
                hnsw.efSearch = value
            else:
                ivf.nprobe = value
            _, found = self.index.search(queries, 10)
            return recall_at(exact, found)

        best, recall = steps[0], measure(steps[0])
        for value in steps[1:]:
            if recall >= recall_target:
                break
            gained = measure(value)
            if gained - recall < 0.002:
                measure(best)
                break
            best, recall = value, gained
        self.stats.recall_at_10 = recall
        self.stats.search_param = {name: best}
        return recall

    # -- files ------------------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write atomically: a crash leaves either the old file or the new one, never half of one."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        faiss.write_index(self.index, str(tmp))
        replace_durably(tmp, path)

    @classmethod
    def load(cls, path: Path, dim: int) -> VectorIndex:
        """The index in `path`. Raises DamagedIndexError if it is not a `dim`-d index of a kind this
        module writes, FileNotFoundError if there is none."""
        if not Path(path).exists():
            raise FileNotFoundError(path)
        try:
            index = faiss.read_index(str(path))
        except (RuntimeError, MemoryError) as e:  # faiss reports a short read or a bad header this way
            raise DamagedIndexError(f"faiss cannot read it: {_faiss_reason(str(e))}") from None
        try:
            return cls(dim, index)
        except ValueError as e:  # another dimension, or an index type no library holds
            raise DamagedIndexError(str(e)) from None

    def holds(self, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> bool:
        """Whether the index holds these vectors under these ids (a sample of the stored ones).

        Flat and HNSW keep the vectors themselves: they must come back exactly. IVF keeps lossy
        codes: most vectors must at least find themselves among their 10 nearest.
        """
        if not len(ids):
            return True
        if self.kind in (FLAT, HNSW):
            kept = np.stack([self.index.reconstruct(int(i)) for i in ids])
            return bool(np.allclose(kept, vectors, rtol=0, atol=1e-6))
        _, found = self.search(vectors, 10)
        return float(np.mean([i in row for i, row in zip(ids, found, strict=True)])) >= 0.5

    def _id_map(self) -> faiss.IndexIDMap2:
        """The id map around a flat or HNSW index (IVF indexes keep their ids in their lists)."""
        assert isinstance(self.index, faiss.IndexIDMap2), self.kind
        return self.index

    def _hnsw(self) -> faiss.IndexHNSW:
        inner = faiss.downcast_index(self._id_map().index)
        assert isinstance(inner, faiss.IndexHNSW), self.kind
        return inner

    def _ivf(self) -> faiss.IndexIVF:
        ivf = faiss.downcast_index(faiss.extract_index_ivf(self.index))  # IVFPQ or IVFScalarQuantizer
        assert isinstance(ivf, faiss.IndexIVF), self.kind
        return ivf


def _faiss_reason(message: str) -> str:
    """What a faiss error says, without the C++ signature, source line and stale errno around it:
    "read error in PATH: 918 != 61440", 'Index type 0x51517849 ("IxQQ") not recognized'."""
    reason = re.split(r" at \S+:\d+: (?:Error: )?", message.splitlines()[-1])[-1]
    reason = re.sub(r"^'[^']*' failed: ", "", reason)
    return re.sub(r" \([^()]*\)$", "", reason)[:200]


def _swig(obj: object) -> Any:
    """A faiss object whose attributes its bundled stubs leave out (HNSW's neighbors, offsets and
    nb_neighbors): checked at run time by SWIG, not by mypy."""
    return obj


def recall_at(exact: npt.NDArray[np.int64], found: npt.NDArray[np.int64], k: int = 10) -> float:
    """Mean share of each row's exact top-k ids that `found`'s top-k also holds (-1 ignored)."""
    hits = total = 0
    for want, got in zip(exact[:, :k], found[:, :k], strict=False):
        want = want[want >= 0]
        hits += len(np.intersect1d(want, got[got >= 0]))
        total += len(want)
    return hits / total if total else 1.0


def _sample(n: int, size: int, seed: int) -> npt.NDArray[np.int64]:
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def _new_faiss_index(plan: IndexPlan, dim: int) -> faiss.Index:
    ip = faiss.METRIC_INNER_PRODUCT
    if plan.kind == FLAT:
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    if plan.kind == HNSW:
        hnsw = faiss.IndexHNSWFlat(dim, plan.hnsw_m, ip)
        hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        return faiss.IndexIDMap2(hnsw)
    quantizer = faiss.IndexFlatIP(dim)
    index: faiss.IndexIVF
    if plan.kind == IVF_SQ8:
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, dim, plan.nlist, faiss.ScalarQuantizer.QT_8bit, ip
        )
    else:
        index = faiss.IndexIVFPQ(quantizer, dim, plan.nlist, plan.pq_m, 8, ip)
    index.own_fields = True  # the quantizer lives as long as the index, not the Python name
    cast(Any, quantizer).this.disown()  # SWIG's handle on the C++ object: not in faiss's stubs
    index.cp.niter = 10  # enough for coarse centroids; training dominates build time otherwise
    if isinstance(index, faiss.IndexIVFPQ):
        index.pq.cp.niter = 15
        index.pq.cp.max_points_per_centroid = 64  # 16k points per sub-quantiser train well enough
    return index


def _kind_of(index: faiss.Index) -> str:
    index = faiss.downcast_index(index)
    if isinstance(index, (faiss.IndexIDMap2, faiss.IndexIDMap)):
        inner = faiss.downcast_index(index.index)
        if isinstance(inner, faiss.IndexFlat):
            return FLAT
        if isinstance(inner, faiss.IndexHNSW):
            return HNSW
        raise ValueError(f"unsupported FAISS index inside the id map: {type(inner).__name__}")
    if isinstance(index, faiss.IndexIVFScalarQuantizer):
        return IVF_SQ8
    if isinstance(index, faiss.IndexIVFPQ):
        return IVF_PQ
    raise ValueError(f"unsupported FAISS index type {type(index).__name__}")
