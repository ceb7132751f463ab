"""Every stored vector's top-k neighbours in an IVF library, cell by cell, with matrix products.

Searching an IVF index once per stored vector scans its inverted lists one query at a time, which
is the slow part of a full neighbour-list build at a million photos (~1,000 queries/s on 2 cores).
The same neighbourhoods come out of a batched brute force restricted to nearby cells:

1. lay the stored float32 vectors out by their IVF cell (streamed from SQLite into one array);
2. for each cell, compare its vectors with the vectors of the `probe` cells whose centroids are
   nearest its own, in one matrix product (`faiss.knn`: BLAS plus a heap);
3. `probe` is the smallest that finds RECALL_TARGET of the exact top-k on a sample. Recall at a
   given `probe` needs no search: it is the share of each sample's exact neighbours whose cell is
   among the `probe` cells nearest the sample's own.

The scores are exact cosines of the stored vectors (the index's codes are not used). Memory: the
vectors once (4 bytes x dim each) plus one cell's candidates; the lists are yielded in chunks.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import faiss
import numpy as np
import numpy.typing as npt

from indexer.vectors import RECALL_TARGET, VectorIndex

SAMPLE = 300  # vectors whose exact neighbours choose `probe`
PROBE_STEPS = (2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(frozen=True)
class CellLayout:
    """Stored vectors ordered by IVF cell: cell c holds rows offsets[c]:offsets[c + 1]."""

    ids: npt.NDArray[np.int64]  # image id of each row
    vectors: npt.NDArray[np.float32]  # [n, dim], unit length
    offsets: npt.NDArray[np.int64]  # [nlist + 1]
    centroids: npt.NDArray[np.float32]  # [nlist, dim]

    @property
    def nlist(self) -> int:
        return len(self.centroids)

    def cell_of_rows(self) -> npt.NDArray[np.int64]:
        return np.repeat(np.arange(self.nlist), np.diff(self.offsets))

    def rows(self, cells: Iterable[int]) -> npt.NDArray[np.int64]:
        return np.concatenate([np.arange(self.offsets[c], self.offsets[c + 1]) for c in cells])


def layout(index: VectorIndex, chunks: Iterable[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]]) -> CellLayout:
    """Place the (ids, vectors) chunks by the cell the IVF `index` keeps each id in."""
    centroids, cell_ids = index.cells()
    counts = np.array([len(ids) for ids in cell_ids], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    ids = np.concatenate(cell_ids).astype(np.int64) if len(cell_ids) else np.zeros(0, np.int64)
    order = np.argsort(ids, kind="stable")  # row of each id, by binary search in sorted ids
    sorted_ids = ids[order]
    vectors = np.zeros((len(ids), index.dim), dtype=np.float32)
    filled = np.zeros(len(ids), dtype=bool)
    for chunk_ids, chunk in chunks:
        where = np.searchsorted(sorted_ids, chunk_ids)
        where = np.minimum(where, max(len(ids) - 1, 0))
        known = sorted_ids[where] == chunk_ids if len(ids) else np.zeros(len(chunk_ids), bool)
        rows = order[where[known]]
        vectors[rows] = chunk[known]
        filled[rows] = True
    if not filled.all():
        missing = ids[~filled][:5].tolist()
        raise ValueError(f"the index holds ids with no stored vector, e.g. {missing}")
    return CellLayout(ids, vectors, offsets, centroids)


def nearest_cells(cells: CellLayout, probe: int) -> npt.NDArray[np.int64]:
    """[nlist, probe]: for each cell, the cells whose centroids are nearest its centroid (itself first)."""
    probe = min(probe, cells.nlist)
    unit = cells.centroids / np.maximum(np.linalg.norm(cells.centroids, axis=1, keepdims=True), 1e-12)
    _, near = faiss.knn(unit, cells.centroids, probe, metric=faiss.METRIC_INNER_PRODUCT)
    return near.astype(np.int64)


def choose_probe(cells: CellLayout, k: int, target: float = RECALL_TARGET, seed: int = 3) -> tuple[int, float]:
    """The smallest probe whose lists would hold `target` of the exact top-k, and that recall."""
    n = len(cells.ids)
    sample = np.random.default_rng(seed).choice(n, min(SAMPLE, n), replace=False)
    _, exact = faiss.knn(cells.vectors[sample], cells.vectors, min(k + 1, n), metric=faiss.METRIC_INNER_PRODUCT)
    row_cell = cells.cell_of_rows()
    truth = [row_cell[row[row != s][:k]] for row, s in zip(exact, sample, strict=True)]  # their cells
    recall = 1.0
    steps = [p for p in PROBE_STEPS if p < cells.nlist] + [cells.nlist]
    for probe in steps:
        near = nearest_cells(cells, probe)
        hits = [np.isin(theirs, near[row_cell[s]]) for s, theirs in zip(sample, truth, strict=True)]
        recall = float(np.mean(np.concatenate(hits))) if hits else 1.0
        if recall >= target:
            return probe, recall
    return cells.nlist, recall


def top_k_by_cell(
    cells: CellLayout, k: int, probe: int
) -> Iterator[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32]]]:
    """(ids [m], neighbour ids [m, k], scores [m, k]) cell by cell, for every stored vector.

    Each vector finds itself among its own cell's; rows with fewer than k vectors in reach are
    padded with id -1 and score -inf.
    """
    near = nearest_cells(cells, probe)
    for c in range(cells.nlist):
        start, stop = cells.offsets[c], cells.offsets[c + 1]
        if start == stop:
            continue
        candidates = cells.rows(near[c])
        want = min(k, len(candidates))
        scores, found = faiss.knn(cells.vectors[start:stop], cells.vectors[candidates], want,
                                  metric=faiss.METRIC_INNER_PRODUCT)
        neighbour_ids = cells.ids[candidates[found]]
        if want < k:
            neighbour_ids = np.pad(neighbour_ids, ((0, 0), (0, k - want)), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, k - want)), constant_values=-np.inf)
        yield cells.ids[start:stop], neighbour_ids, scores.astype(np.float32)
