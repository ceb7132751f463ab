"""Re-scanning an unchanged library: how fast `lookalike index` finds there is nothing to do."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

from bench.synthetic import fill_library, random_unit
from indexer.backbone import Backbone
from indexer.library import Library
from indexer.pipeline import index_folder
from indexer.vectors import VectorIndex


def rescan(photos: Path, library_path: Path, backbone: Backbone, reps: int) -> tuple[float, int]:
    """Median seconds of `index_folder` on an unchanged library, and the files it saw."""
    times, files = [], 0
    for _ in range(reps):
        library = Library(library_path)
        try:
            started = time.perf_counter()
            report = index_folder(photos, library, backbone)
            times.append(time.perf_counter() - started)
        finally:
            library.close()
        if report.indexed or report.removed or sum(report.failed.values()):
            raise RuntimeError(f"the library was not unchanged: {report.summary()}")
        files = report.unchanged
    return statistics.median(times), files


def make_tree(root: Path, n: int, per_folder: int = 100) -> list[tuple[str, int, float]]:
    """n tiny '.jpg' files in folders of `per_folder`; returns (path, size, mtime) of each."""
    out = []
    for i in range(n):
        folder = f"{i // (per_folder * 100):03d}/{(i // per_folder) % 100:02d}"
        (root / folder).mkdir(parents=True, exist_ok=True)
        rel = f"{folder}/img_{i:06d}.jpg"
        path = root / rel
        path.write_bytes(b"x" * (1 + i % 7))
        st = path.stat()
        out.append((rel, st.st_size, st.st_mtime))
    return out


def make_library(path: Path, root: Path, files: list[tuple[str, int, float]], backbone: Backbone) -> None:
    """A library whose rows match `files`, indexed, with random unit vectors (no model run)."""
    library = fill_library(path, root, files, backbone,
                           lambda start, n: random_unit(n, backbone.dim, seed=start))
    try:
        ids, vectors = library.stored_vectors()
        # A flat file: building the HNSW index the library would choose at 100k takes minutes, and
        # a re-scan only loads the file, whatever its type.
        index = VectorIndex.build(backbone.dim, ids, vectors, kind="flat")
        index.save(library.vectors_path)
        with library.Session.begin() as s:
            library.set_meta(s, vectors_dirty="0", **index.describe())
    finally:
        library.close()


def synthetic_rescan(workdir: Path, n: int, reps: int, backbone: Backbone, say=print) -> dict:
    root = workdir / f"tree{n}"
    started = time.perf_counter()
    files = make_tree(root, n)
    make_library(workdir / f"library{n}", root, files, backbone)
    say(f"  made {n} files and their library in {time.perf_counter() - started:.0f}s")
    # Warm the page cache and the dentry cache once: a re-scan of a collection someone uses.
    seconds, seen = rescan(root, workdir / f"library{n}", backbone, reps + 1)
    os.sync()
    return {"files": seen, "seconds": seconds}
