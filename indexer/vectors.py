"""The FAISS file: vectors under their database ids, written atomically, rebuildable from SQLite."""

from __future__ import annotations

import os
from pathlib import Path

import faiss
import numpy as np
import numpy.typing as npt


class VectorIndex:
    """Inner-product FAISS index whose ids are `images.id` (IndexIDMap2 over a flat index).

    Vectors are unit length, so inner product is cosine similarity.
    FAISS CPU indexes allow concurrent searches but not concurrent writes: the web process only reads.
    """

    def __init__(self, dim: int, index: faiss.Index | None = None) -> None:
        self.dim = dim
        self.index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        if self.index.d != dim:
            raise ValueError(f"FAISS index has dimension {self.index.d}, library says {dim}")

    @classmethod
    def empty(cls, dim: int) -> VectorIndex:
        return cls(dim)

    @classmethod
    def build(
        cls, dim: int, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]
    ) -> VectorIndex:
        """A new index holding these vectors."""
        index = cls(dim)
        index.add(ids, vectors)
        return index

    @property
    def supports_updates(self) -> bool:
        """Whether add/remove keep the index exact; otherwise the library rebuilds it."""
        return True

    def describe(self) -> dict[str, object]:
        """Facts recorded in the library's meta table when the file is written."""
        return {"index_type": "flat", "index_size": self.ntotal}

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def ids(self) -> npt.NDArray[np.int64]:
        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def add(self, ids: npt.ArrayLike, vectors: npt.NDArray[np.float32]) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(ids):
            self.index.add_with_ids(vectors, ids)

    def remove(self, ids: npt.ArrayLike) -> int:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if not len(ids):
            return 0
        return int(self.index.remove_ids(ids))

    def search(
        self, queries: npt.NDArray[np.float32], k: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Top-k by cosine for each query row. Rows are padded with id -1 when k > ntotal."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = max(1, min(int(k), max(self.ntotal, 1)))
        scores, ids = self.index.search(queries, k)
        return scores, ids

    def save(self, path: Path) -> None:
        """Write atomically: a crash leaves either the old file or the new one, never half of one."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        faiss.write_index(self.index, str(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, dim: int) -> VectorIndex:
        return cls(dim, faiss.read_index(str(path)))
