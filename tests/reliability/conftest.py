"""Helpers for the fault tests: real photos from the shared corpus, the CLI, library facts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from sqlalchemy import func, select

from indexer.library import Library
from indexer.schema import Image

CLI = "from lookalike.cli import main; main()"


def copy_photos(corpus: Path, dst: Path, n: int, step: int = 7) -> list[str]:
    """Every `step`-th photo of the corpus (sorted, so fixed), keeping the class folders; their paths."""
    files = sorted(corpus.rglob("*.jpg"))[::step][:n]
    out = []
    for f in files:
        rel = f"{f.parent.name}/{f.name}"
        (dst / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, dst / rel)
        out.append(rel)
    return out


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`lookalike ARGS` in a child process (the real entry point, its own torch and workers)."""
    return subprocess.run([sys.executable, "-c", CLI, *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def status_json(library: Path) -> dict:
    result = cli("status", "--library", str(library), "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def library_vectors(path: Path) -> dict[str, np.ndarray]:
    """path -> stored vector of every indexed image; checks SQLite and the FAISS file agree."""
    library = Library(path)
    try:
        with library.Session() as s:
            paths = dict(s.execute(select(Image.id, Image.path)).all())
            assert s.scalar(select(func.count(func.distinct(Image.path)))) == len(paths)
        ids, vectors = library.stored_vectors()
        index = library.load_vectors()
        assert index.ntotal == len(ids)
        assert sorted(index.ids().tolist()) == ids.tolist()
        return {paths[int(i)]: v for i, v in zip(ids, vectors, strict=False)}
    finally:
        library.close()
