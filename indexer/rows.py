"""An image row as the plan reads it, and the statuses it can have: whether a scanned file is the row
unchanged is decided here, for `indexer.plan` and for the unchanged-run shortcut (search.unchanged).

Plain sqlite3 tuples and no SQLAlchemy: the shortcut must not import it."""

from __future__ import annotations

from typing import NamedTuple, Protocol

# Image.status values.
PENDING = "pending"  # row exists, no vector yet (new or changed file; a crash leaves these)
INDEXED = "indexed"  # has a vector in `embeddings` and in the FAISS file
FAILED = "failed"  # could not be decoded; `error` says why ("reason: detail")

# The reasons of a failed read, not of the file's bytes: gone or unreadable at that moment (a share
# that dropped out, a file being replaced, a permission or I/O error). Every run tries such a photo
# again; any other failure (a corrupt file) waits until the file changes.
MISSING = "missing file"
UNREADABLE = "unreadable file"
READ_FAILURES = (MISSING, UNREADABLE)

ROWS_SQL = "SELECT id, path, size, mtime, status, hash, error FROM images"  # plain tuples: ORM rows cost 10 s at 1M


class Row(NamedTuple):
    id: int
    path: str
    size: int
    mtime: float
    status: str
    hash: str | None
    error: str | None


class Scanned(Protocol):
    @property
    def size(self) -> int: ...
    @property
    def mtime(self) -> float: ...


def is_unchanged(row: Row, f: Scanned) -> bool:
    """The file is the row as indexed (or as failed on its bytes): same size and mtime, nothing
    left pending, no failed read to try again."""
    return row.size == f.size and row.mtime == f.mtime and row.status != PENDING and not read_failed(row)


def read_failed(row: Row) -> bool:
    """Whether the row failed because its file could not be read at the time (READ_FAILURES)."""
    return row.status == FAILED and (row.error or "").split(":", 1)[0] in READ_FAILURES
