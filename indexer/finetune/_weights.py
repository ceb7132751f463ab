"""Tuned weights written into the library folder atomically, named by their content."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indexer.backbone import file_sha256
from indexer.library import Library
from indexer.library_files import replace_durably

TMP_PREFIX = ".writing-"  # a weights file being written; one left by a killed run is removed later


@dataclass(frozen=True)
class SavedWeights:
    """A weights file in `<library>/representations/`, loadable by Backbone(name, weights=path)."""

    path: Path
    sha256: str  # the whole hex digest of the file
    identity: str  # Backbone.weights_identity of the file ("sha256:" + the first 16 hex digits)


def save_weights(library: Library, state_dict: dict[str, Any]) -> SavedWeights:
    """Write `state_dict` to `<library>/representations/<sha256>.pth`: written beside it under a
    temporary name, flushed to disk, then renamed, so a kill never leaves half a file under the
    final name. The same weights saved twice give the same file."""
    import torch

    folder = library.representations_dir
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(TMP_PREFIX + "*"):  # left by a run killed while writing
        stale.unlink(missing_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=".pth", dir=folder)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state_dict, f)
        sha = file_sha256(tmp)
        path = folder / f"{sha}.pth"
        replace_durably(tmp, path)  # a representation row will name it
    finally:
        tmp.unlink(missing_ok=True)
    return SavedWeights(path, sha, f"sha256:{sha[:16]}")
