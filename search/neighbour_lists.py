"""Every indexed image's stored top-K neighbour list, built in bounded chunks and then kept current by difference.

A full build searches the index with every stored vector, `CHUNK` at a time, and streams the rows into
SQLite. After that, an indexer run changes only what it must (the lists are exact where the index is):

- new and re-embedded photos get their own lists (a search each);
- a photo whose list held a removed or re-embedded photo gets a fresh list;
- any other photo's list changes only if a new vector enters its top K: found by searching with the
  new vectors (the reverse direction) and comparing with each candidate's K-th score.

The lists are keyed on what they were built from: the fingerprint of the vectors the searcher's
index holds (`Searcher.source`), and per image the `indexed_at` of the vector used
(`neighbour_sources`), which is what the difference is taken against.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session
from sqlalchemy.schema import CreateIndex

from indexer.library import Library, parse_state
from indexer.schema import INDEXED, Image, Neighbour, NeighbourSource
from indexer.vectors import FLAT, IVF_PQ, IVF_SQ8, VectorIndex
from search import cell_lists
from search.searcher import PADDING, Searcher, SearchHit

log = logging.getLogger(__name__)

NEIGHBOURS_STATE = "knn_neighbours"  # meta key: {"k", "vectors"} the stored lists were built from
CHUNK = 4096  # query vectors searched and written at a time: ~20 MB of 1280-d floats
IN_CHUNK = 500  # ids per SQL IN (...) list
INCREMENTAL_SHARE = 0.05  # changes beyond this share of the library: a full build is cheaper
WHOLE_SEARCH_MAX = 1 << 20  # new vectors x library size up to which admitting them searches the whole index
_INSERT = "INSERT INTO neighbours (image_id, rank, neighbour_id, score) VALUES (?, ?, ?, ?)"


@dataclass(frozen=True)
class Delta:
    """Indexed images since the lists were built: new, re-embedded (new vector, same id), removed."""

    added: npt.NDArray[np.int64]
    changed: npt.NDArray[np.int64]
    removed: npt.NDArray[np.int64]

    @property
    def size(self) -> int:
        return len(self.added) + len(self.changed) + len(self.removed)


@dataclass(frozen=True)
class ListsUpdate:
    """What `NeighbourLists.update` did. `touched`: images whose lists were rewritten (None: all)."""

    mode: str  # "current", "full", "incremental", "waiting" (the index is mid-update) or "read-only"
    touched: tuple[int, ...] | None
    previous: list[str] | None  # the fingerprint the lists had before
    seconds: float = 0.0


@dataclass(frozen=True)
class TopK:
    """Search results as flat columns, one row per (query, rank) entry, ranks 0.. with no gaps."""

    image_id: npt.NDArray[np.int64]
    rank: npt.NDArray[np.int64]
    neighbour_id: npt.NDArray[np.int64]
    score: npt.NDArray[np.float32]

    def rows(self) -> list[tuple[int, int, int, float]]:
        return list(zip(self.image_id.tolist(), self.rank.tolist(), self.neighbour_id.tolist(),
                        self.score.tolist(), strict=True))


def without_self(
    ids: npt.NDArray[np.int64], found: npt.NDArray[np.int64], scores: npt.NDArray[np.float32], k: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Search results [m, >= k] as lists [m, k]: each query itself and padding dropped, rank order
    kept, rows short of k padded with id -1 and score -inf."""
    keep = (found >= 0) & (found != ids[:, None]) & (scores > PADDING)
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # kept entries first, in rank order
    kept = np.take_along_axis(keep, order, 1)
    out_found = np.where(kept, np.take_along_axis(found, order, 1), -1)
    out_scores = np.where(kept, np.take_along_axis(scores, order, 1), -np.inf).astype(np.float32)
    if out_found.shape[1] < k:
        pad = ((0, 0), (0, k - out_found.shape[1]))
        out_found = np.pad(out_found, pad, constant_values=-1)
        out_scores = np.pad(out_scores, pad, constant_values=-np.inf)
    return out_found, out_scores


def top_k(index: VectorIndex, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32], k: int) -> TopK:
    """Each vector's k nearest ids in the index, itself and padding dropped, as flat numpy columns."""
    scores, found = index.search(vectors, k + 1)
    found, scores = without_self(ids, found, scores, k)
    rows, cols = np.nonzero(found >= 0)
    return TopK(ids[rows], cols.astype(np.int64), found[rows, cols], scores[rows, cols])


class NeighbourLists:
    """The `neighbours` table of one library, `k` entries per indexed image, against `searcher`'s index."""

    def __init__(self, searcher: Searcher, k: int) -> None:
        self.searcher = searcher
        self.library: Library = searcher.library
        self.k = int(k)

    # -- state ------------------------------------------------------------------------------------

    def state(self) -> dict:
        return self.library.state(NEIGHBOURS_STATE)

    def current(self, min_k: int) -> bool:
        """Whether the stored lists hold at least `min_k` entries and match the loaded index."""
        return _built_from(self.state(), self.searcher.source, min_k)

    def read(self, image_id: int, k: int) -> list[SearchHit] | None:
        """An image's k nearest neighbours from its stored list, best first, when the lists are current
        and hold k entries (None otherwise: search the index instead).

        The lists are what a search of the loaded index finds: exact on a flat index, at the index's
        recall target on the others. One indexed read instead of a vector read and an index search.
        """
        with self.library.engine.connect() as conn:  # one read transaction: state and list agree
            state = conn.exec_driver_sql("SELECT value FROM meta WHERE key = ?", (NEIGHBOURS_STATE,)).scalar()
            if not _built_from(parse_state(state), self.searcher.source, k):
                return None
            rows = conn.exec_driver_sql(
                "SELECT neighbour_id, score FROM neighbours WHERE image_id = ? AND rank < ? ORDER BY rank",
                (int(image_id), int(k))).all()
        return [SearchHit(int(i), float(score)) for i, score in rows] or None

    def delta(self) -> Delta:
        """What changed in the indexed vectors since the lists were built (by `indexed_at`)."""
        with self.library.engine.connect() as conn:
            added = conn.exec_driver_sql(
                "SELECT i.id FROM images i LEFT JOIN neighbour_sources s ON s.image_id = i.id "
                "WHERE i.status = ? AND s.image_id IS NULL", (INDEXED,)).all()
            changed = conn.exec_driver_sql(
                "SELECT i.id FROM images i JOIN neighbour_sources s ON s.image_id = i.id "
                "WHERE i.status = ? AND s.indexed_at IS NOT i.indexed_at", (INDEXED,)).all()
            removed = conn.exec_driver_sql(
                "SELECT s.image_id FROM neighbour_sources s LEFT JOIN images i "
                "ON i.id = s.image_id AND i.status = ? WHERE i.id IS NULL", (INDEXED,)).all()

        def ids(rows: Sequence) -> npt.NDArray[np.int64]:
            return np.array(sorted(r[0] for r in rows), dtype=np.int64)

        return Delta(ids(added), ids(changed), ids(removed))

    # -- the one entry point --------------------------------------------------------------------

    def update(self, *, force: bool = False, progress: bool = False) -> ListsUpdate:
        """Bring the lists in line with the loaded index: by difference when that is cheaper."""
        started = time.perf_counter()
        state = self.state()
        source = self.searcher.source
        previous = state.get("vectors")
        if source is None:  # an indexer run is under way: keep the lists built from the last index
            return ListsUpdate("waiting", (), previous)
        if not force and state.get("k") == self.k and previous == source:
            return ListsUpdate("current", (), previous)
        if self.library.vectors_fingerprint() != source:  # a new indexer run began since the load
            return ListsUpdate("waiting", (), previous)
        if self.library.read_only:  # nothing can be stored: serve the lists as they are
            return ListsUpdate("read-only", (), previous)
        n = self.searcher.index.ntotal
        full = force or state.get("k") != self.k or not state
        delta = None if full else self.delta()
        if delta is None or n <= 4 * self.k or delta.size > max(100, INCREMENTAL_SHARE * n):
            touched, mode = None, "full"
            if not self.rebuild(source, progress=progress):
                return ListsUpdate("waiting", (), previous)
        else:
            touched, mode = tuple(sorted(self.apply(delta))), "incremental"
        self._save_state(source)
        seconds = time.perf_counter() - started
        log.info("%s update of the %d-NN lists of %d images in %.1fs", mode, self.k, n, seconds)
        return ListsUpdate(mode, touched, previous, seconds)

    # -- the full build -----------------------------------------------------------------------------

    def rebuild(self, source: list[str], *, progress: bool = False) -> bool:
        """Every indexed image's list from scratch; False if the vectors changed meanwhile.

        The lists are computed first (numpy, k per image) and then replace the old ones in one
        transaction: readers see the old lists until it commits, and a run killed midway leaves
        them whole. The rows go in image order, without per-row foreign key checks, and with the
        neighbour_id index dropped and built again at the end (at 1M photos, 20M rows inserted
        into that index at random took longer than the search).
        """
        ids, found, scores = self._compute_all(progress)
        started = time.perf_counter()
        try:
            with self.library.bulk_transaction() as conn:  # holds the write lock from here
                if self.library.vectors_fingerprint() != source:  # an indexer run committed meanwhile
                    raise _Moved
                conn.execute("DELETE FROM meta WHERE key = ?", (NEIGHBOURS_STATE,))
                conn.execute("DELETE FROM neighbours")
                conn.execute("DELETE FROM neighbour_sources")
                conn.execute("INSERT INTO neighbour_sources (image_id, indexed_at) "
                             "SELECT id, indexed_at FROM images WHERE status = ?", (INDEXED,))
                indexes = list(Neighbour.__table__.indexes)  # type: ignore[attr-defined]
                for ix in indexes:
                    conn.execute(f"DROP INDEX {ix.name}")
                for start in range(0, len(ids), CHUNK):
                    part = slice(start, start + CHUNK)
                    conn.executemany(_INSERT, _rows(ids[part], found[part], scores[part]))
                for ix in indexes:
                    conn.execute(str(CreateIndex(ix).compile(self.library.engine)))
        except _Moved:
            return False
        log.info("neighbour lists: %d images written in %.1fs", len(ids), time.perf_counter() - started)
        return True

    def _compute_all(self, progress: bool) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64],
                                                    npt.NDArray[np.float32]]:
        """(ids [n], neighbour ids [n, k], scores [n, k]) of every indexed image, in id order.

        Searched in the index CHUNK queries at a time or, for an IVF index (a large library), cell
        by cell with matrix products over the stored vectors (`search.cell_lists`).
        """
        from tqdm import tqdm

        index = self.searcher.index
        n, k = index.ntotal, self.k
        ids = np.zeros(0, dtype=np.int64)
        found = np.full((n, k), -1, dtype=np.int64)
        scores = np.full((n, k), -np.inf, dtype=np.float32)
        bar = tqdm(total=n, unit="img", disable=not progress, desc="neighbour lists", smoothing=0.1)
        logged = time.perf_counter()

        def done(count: int) -> None:
            nonlocal logged
            bar.update(count)
            if time.perf_counter() - logged > 30:  # the web has no progress bar: say it in the log
                log.info("neighbour lists: %d / %d images", bar.n, n)
                logged = time.perf_counter()

        if index.kind in (IVF_SQ8, IVF_PQ):
            cells = cell_lists.layout(index, self.library.iter_vectors(chunk=CHUNK))
            probe, recall = cell_lists.choose_probe(cells, k)
            log.info("neighbour lists by cell: the %d nearest of %d cells, recall@%d %.3f on a sample",
                     probe, cells.nlist, k, recall)
            ids = np.sort(cells.ids)
            for cell_ids, cell_found, cell_scores in cell_lists.top_k_by_cell(cells, k + 1, probe):
                rows = np.searchsorted(ids, cell_ids)
                found[rows], scores[rows] = without_self(cell_ids, cell_found, cell_scores, k)
                done(len(cell_ids))
        else:
            parts, at = [], 0
            for chunk_ids, vectors in self.library.iter_vectors(chunk=CHUNK):
                # Rows indexed since the index was loaded: the fingerprint check refuses these lists.
                chunk_ids, vectors = chunk_ids[: n - at], vectors[: n - at]
                chunk_scores, chunk_found = index.search(vectors, k + 1)
                span = slice(at, at + len(chunk_ids))
                found[span], scores[span] = without_self(chunk_ids, chunk_found, chunk_scores, k)
                parts.append(chunk_ids)
                at += len(chunk_ids)
                done(len(chunk_ids))
            ids = np.concatenate(parts) if parts else ids
        bar.close()
        return ids, found[: len(ids)], scores[: len(ids)]

    # -- by difference ---------------------------------------------------------------------------------

    def apply(self, delta: Delta) -> set[int]:
        """Apply `delta` to the lists; returns the images whose lists changed."""
        fresh = np.union1d(delta.added, delta.changed)
        with self.library.Session.begin() as s:
            self.library.save_state(NEIGHBOURS_STATE, None, s)  # killed midway: rebuild whole
            stale = set(self._holders(s, delta.changed))  # lists holding a vector that changed
            if len(delta.removed):  # the cascade already took removed images out of the lists
                stale |= self._short_lists(s)
            redo = np.union1d(fresh, np.fromiter(stale, dtype=np.int64, count=len(stale)))
            for part in _chunks(redo.tolist()):
                s.execute(delete(Neighbour).where(Neighbour.image_id.in_(part)))
            for part in _chunks(delta.removed.tolist() + delta.changed.tolist()):
                s.execute(delete(NeighbourSource).where(NeighbourSource.image_id.in_(part)))
            for part in _chunks(fresh.tolist()):
                s.execute(text(
                    "INSERT INTO neighbour_sources (image_id, indexed_at) SELECT id, indexed_at "
                    f"FROM images WHERE id IN ({','.join(map(str, part))})"))
        index = self.searcher.index
        for part in _chunks(redo.tolist(), CHUNK):
            ids, vectors = self.library.stored_vectors(part)
            _insert(self.library, top_k(index, ids, vectors, self.k).rows())
        touched = set(redo.tolist())
        if len(fresh):
            touched |= self._admit(fresh, set(touched))
        return touched

    def _admit(self, fresh: npt.NDArray[np.int64], skip: set[int]) -> set[int]:
        """Put each new vector into the lists of the other images whose top K it enters."""
        index = self.searcher.index
        ids, vectors = self.library.stored_vectors(fresh)
        exact = index.kind == FLAT
        floor = self._lowest_kth() if exact else None
        m = 2 * self.k
        if exact and len(ids) * index.ntotal <= WHOLE_SEARCH_MAX:
            m = index.ntotal - 1  # one search to the end: what the deepening below ends at, in one call
        while True:
            scores, found = index.search(vectors, m + 1)
            # Exact index: any image whose K-th score is below this search's last score may have
            # been missed; search deeper until the last score is under every list's K-th.
            if not exact or floor is None or m + 1 >= index.ntotal or scores[:, -1].max() <= floor:
                break
            m *= 4
        offers: dict[int, list[tuple[float, int]]] = defaultdict(list)
        for x, row_scores, row_ids in zip(ids.tolist(), scores, found, strict=True):
            for score, y in zip(row_scores.tolist(), row_ids.tolist(), strict=True):
                if y >= 0 and y != x and y not in skip and score > PADDING:
                    offers[y].append((score, x))
        if not offers:
            return set()
        # Each candidate's K-th score first (one number per list; a list shorter than K takes
        # anything), then whole lists only where a new vector enters: a deep search of an exact
        # index offers every image, and reading every list cost 0.5 s at 3,781 photos.
        kth = self._kth_scores(offers)
        entering = {y: e for y, offered in offers.items()
                    if (e := [(score, x) for score, x in offered if score > kth.get(y, -np.inf)])}
        changed: dict[int, list[tuple[float, int]]] = {}
        with self.library.Session() as s:
            lists = self._lists(s, entering)
        for y, new in entering.items():
            changed[y] = sorted(lists.get(y, []) + new, key=lambda e: -e[0])[: self.k]
        with self.library.Session.begin() as s:
            for part in _chunks(list(changed)):
                s.execute(delete(Neighbour).where(Neighbour.image_id.in_(part)))
        _insert(self.library, [(y, rank, x, score) for y, merged in changed.items()
                               for rank, (score, x) in enumerate(merged)])
        return set(changed)

    # -- queries -----------------------------------------------------------------------------------------

    def _holders(self, s: Session, ids: npt.NDArray[np.int64]) -> list[int]:
        out: list[int] = []
        for part in _chunks(ids.tolist()):
            out += s.scalars(select(Neighbour.image_id).where(Neighbour.neighbour_id.in_(part)).distinct()).all()
        return out

    def _short_lists(self, s: Session) -> set[int]:
        """Images whose list has fewer than k entries (a removed image left it)."""
        n = s.scalar(select(func.count()).select_from(Image).where(Image.status == INDEXED)) or 0
        want = min(self.k, max(n - 1, 0))
        rows = s.execute(text(
            "SELECT image_id FROM neighbours GROUP BY image_id HAVING count(*) < :want"), {"want": want})
        return {r[0] for r in rows}

    def _lowest_kth(self) -> float | None:
        with self.library.Session() as s:
            return s.scalar(select(func.min(Neighbour.score)).where(Neighbour.rank == self.k - 1))

    def _kth_scores(self, ids: Iterable[int]) -> dict[int, float]:
        """{image: its K-th score} of the images among `ids` whose lists hold K entries (a list is
        sorted by score: its K-th is its lowest)."""
        out: dict[int, float] = {}
        with self.library.engine.connect() as conn:  # one row per image, summed up by SQLite
            for part in _chunks(list(ids)):
                out.update(conn.exec_driver_sql(
                    f"SELECT image_id, min(score) FROM neighbours WHERE image_id IN ({','.join('?' * len(part))}) "
                    "GROUP BY image_id HAVING count(*) >= ?", (*part, self.k)).all())
        return out

    def _lists(self, s: Session, ids: Iterable[int]) -> dict[int, list[tuple[float, int]]]:
        out: dict[int, list[tuple[float, int]]] = defaultdict(list)
        for part in _chunks(list(ids)):
            rows = s.execute(
                select(Neighbour.image_id, Neighbour.score, Neighbour.neighbour_id)
                .where(Neighbour.image_id.in_(part))
                .order_by(Neighbour.image_id, Neighbour.rank)
            )
            for image_id, score, neighbour_id in rows:
                out[image_id].append((score, neighbour_id))
        return out

    def _save_state(self, source: list[str]) -> None:
        self.library.save_state(NEIGHBOURS_STATE, {"k": self.k, "vectors": source})


def stored_pairs(library: Library, min_score: float, k: int) -> dict[tuple[int, int], float] | None:
    """{(a, b): cosine}, a < b, of every stored list entry within rank k at `min_score` or above;
    None when the stored lists are shorter than k or older than the library's vectors.

    A pass over the neighbours table: what a search of every stored vector would find, without
    loading the vectors (duplicates at a million photos).
    """
    state = library.state(NEIGHBOURS_STATE)
    if state.get("k", 0) < k or state.get("vectors") != library.vectors_fingerprint():
        return None
    with library.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT image_id, neighbour_id, score FROM neighbours WHERE rank < ? AND score >= ?",
            (int(k), float(min_score)))
        return {(a, b) if a < b else (b, a): score for a, b, score in rows}


def _built_from(state: dict, source: list[str] | None, min_k: int) -> bool:
    """Whether lists with this stored state hold `min_k` entries built from the vectors `source`."""
    return source is not None and state.get("k", 0) >= min_k and state.get("vectors") == source


class _Moved(Exception):
    """The vectors changed while the lists were computed: they are not stored."""


def _rows(ids: npt.NDArray[np.int64], found: npt.NDArray[np.int64],
          scores: npt.NDArray[np.float32]) -> list[tuple[int, int, int, float]]:
    rows, cols = np.nonzero(found >= 0)
    return TopK(ids[rows], cols.astype(np.int64), found[rows, cols], scores[rows, cols]).rows()


def _insert(library: Library, rows: list[tuple[int, int, int, float]]) -> None:
    if rows:
        with library.engine.begin() as conn:
            conn.exec_driver_sql(_INSERT, rows)


def _chunks(items: list, size: int = IN_CHUNK) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]
