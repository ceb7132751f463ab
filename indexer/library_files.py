"""The files of a library folder and the locks on them, without SQLAlchemy, NumPy or FAISS.

indexer/library.py is the library itself; the unchanged-run shortcut (search.unchanged) needs only
these names, the writer lock and the read-only test, and must not pay for the rest."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DB_FILE = "library.db"
VECTORS_FILE = "vectors.faiss"
LOCK_FILE = "index.lock"
DERIVED_LOCK_FILE = "derived.lock"
REPRESENTATIONS_DIR = "representations"  # tuned weights files, <library>/representations/<sha256>.pth


@contextmanager
def file_lock(path: Path, *, busy: Exception | None = None) -> Iterator[None]:
    """An exclusive lock on `path` (flock: released when the process dies) while the block runs.

    Waits for another holder, or with `busy` raises it at once instead.
    """
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (fcntl.LOCK_NB if busy is not None else 0))
        except BlockingIOError:
            if busy is None:
                raise
            raise busy from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def is_read_only(path: Path) -> bool:
    """Whether this process cannot write the library folder or its database (then it is opened read-only)."""
    db = path / DB_FILE
    return not os.access(path, os.W_OK) or (db.exists() and not os.access(db, os.W_OK))


def replace_durably(tmp: Path | str, path: Path | str) -> None:
    """Put the finished file `tmp` in place of `path` so that it survives a power cut: its bytes
    flushed to disk, the rename, then the folder flushed too, without which the rename itself can
    be lost while what depends on it (a database row naming the file) is not."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    folder = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
