"""Derived .npz files beside a library (the learned head, the queue's clusters, the map's fit):
read as missing when damaged, so that whoever reads them rebuilds them."""

from __future__ import annotations

import logging
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
