"""Derived .npz files beside a library (the learned head, the queue's clusters, the map's fit):
written whole or not at all, and read as missing when damaged, so that whoever reads them rebuilds
them."""

from __future__ import annotations

import logging
import os
import threading
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

log = logging.getLogger(__name__)
T = TypeVar("T")

# What np.load and reading its arrays raise on an empty, truncated or garbage file (or one of
# another version: a missing array, facts of the wrong type).
DAMAGED = (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile, zlib.error)


def read_npz(path: Path, read: Callable[[np.lib.npyio.NpzFile], T]) -> T | None:
    """`read(arrays)` of the file; None when there is none, or, with one warning, when it is damaged."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return read(data)
    except FileNotFoundError:
        return None
    except DAMAGED as e:
        log.warning("%s is damaged (%s: %s): rebuilding it", path, type(e).__name__, e)
        return None


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write the arrays to `path` atomically: a crash leaves the old file or the new one, and a
    failed write (a full disk, a folder this user cannot write) leaves no temporary file behind.
    The temporary name is this thread's own: the indexer and the web may write at once."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.tmp.npz")
    try:
        np.savez(tmp, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
