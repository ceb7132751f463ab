"""An image row as the plan reads it, and the statuses it can have: whether a scanned file is the row
unchanged is decided here, for `indexer.plan` and for the unchanged-run shortcut (search.unchanged).

Plain sqlite3 tuples and no SQLAlchemy: the shortcut must not import it."""

from __future__ import annotations

from typing import NamedTuple, Protocol

# Image.status values.
PENDING = "pending"  # row exists, no vector yet (new or changed file; a crash leaves these)
INDEXED = "indexed"  # has a vector in `embeddings` and in the FAISS file
FAILED = "failed"  # could not be decoded; `error` says why

ROWS_SQL = "SELECT id, path, size, mtime, status, hash FROM images"  # plain tuples: ORM rows cost 10 s at 1M


class Row(NamedTuple):
    id: int
    path: str
    size: int
    mtime: float
    status: str
    hash: str | None


class Scanned(Protocol):
    @property
    def size(self) -> int: ...
    @property
    def mtime(self) -> float: ...


def is_unchanged(row: Row, f: Scanned) -> bool:
    """The file is the row as indexed (or as failed): same size and mtime, nothing left pending."""
    return row.size == f.size and row.mtime == f.mtime and row.status != PENDING
