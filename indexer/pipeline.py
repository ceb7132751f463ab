"""The batch job: a photo folder becomes rows in SQLite and vectors in FAISS, incrementally.

Follow a photo from disk to vector, one module per stage (clip-retrieval's reader -> mapper -> writer):

    indexer/scan.py     walk the root: (path, size, mtime) of every image file
    indexer/plan.py     compare with the database: moves by hash, removals, pending rows -> PhotoTask
    indexer/decode.py   PhotoTask -> read, hash, decode, crop to uint8 -> Decoded / DecodedBatch
    indexer/embed.py    DecodedBatch -> Backbone -> EmbeddedBatch (unit vectors)
    indexer/write.py    EmbeddedBatch -> one SQLite transaction (rows + vectors) -> FAISS add
    indexer/runners/    local (decode threads + one engine on a CPU, DataLoader worker processes
                        on a GPU or when asked) or ray (Ray Data): decode + embed

This module is the driver that joins them. The driver alone writes: the database is committed batch
by batch and is the source of truth, so a run killed at any moment is resumed by the next one, and
the FAISS file (written atomically at the end) is rebuilt from the stored vectors if it is stale.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

from indexer.allocator import keep_freed_memory
from indexer.backbone import Backbone
from indexer.hashes import backfill_signals
from indexer.library import Library, LibraryError
from indexer.pathnames import is_utf8, printable
from indexer.plan import check_library, plan_run
from indexer.report import IndexReport
from indexer.representations import backbone_for_library
from indexer.runners import Runner, get_runner
from indexer.runners.cores import default_workers
from indexer.scan import ScanResult, scan
from indexer.write import write_batch

log = logging.getLogger(__name__)

__all__ = ["IndexReport", "index_folder", "default_workers"]


def __getattr__(name: str) -> Any:
    """`_worker_init` as before, from the process layout, which imports torch: only when asked for."""
    if name == "_worker_init":
        from indexer.runners.local import _worker_init

        return _worker_init
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def index_folder(
    photos: Path,
    library: Library,
    backbone: Backbone,
    *,
    batch_size: int = 32,
    workers: int | None = None,
    reembed: bool = False,
    progress: bool = False,
    runner: str | Runner = "local",
    ray_address: str | None = None,
    memory_budget: int | None = None,
    engine: str = "auto",
    embed_in_workers: bool | None = None,
    settling: Collection[str] = (),
    scanned: ScanResult | None = None,
) -> IndexReport:
    """Bring `library` in line with the photos under `photos`. Raises LibraryError on misuse.

    `engine` is auto, torch or openvino (indexer.engines); `embed_in_workers` picks the local
    runner's CPU layout (None: the measured default). After `lookalike tune`, a `backbone` with the
    backbone's own weights embeds with the library's current (tuned) weights instead
    (indexer.representations). Paths in `settling` (files still being written: indexer/watch.py)
    are left as the library has them, for a later run. `scanned`: a scan of `photos` made just
    before (search.unchanged's, which found something to do), not made again.
    """
    started = time.perf_counter()
    keep_freed_memory()
    root = Path(photos).expanduser().resolve()
    if not root.is_dir():
        raise LibraryError(f"{root} is not a folder")
    if not is_utf8(root):
        raise LibraryError(f"{printable(root)}: the photo folder's path is not UTF-8, "
                           f"and the library records it as text: rename it")
    run = get_runner(runner, ray_address=ray_address) if isinstance(runner, str) else runner
    report = IndexReport(started=started)
    with library.writer_lock():
        backbone = backbone_for_library(library, backbone)  # a tuned library embeds with its tuned weights
        check_library(library, root, backbone, reembed)
        library.record_representation(backbone.identity(), backbone.weights)
        if memory_budget is not None:  # remembered: readers rebuilding the index keep to it
            with library.Session.begin() as s:
                library.set_meta(s, memory_budget=str(memory_budget))
        vectors = library.load_vectors(full_check=True)
        dirty = library.meta().get("vectors_dirty") == "1" or not library.vectors_path.exists()

        scanned = scan(root, skip=library.path) if scanned is None else scanned
        report.unreadable_dirs = scanned.unreadable_dirs
        report.ignored = scanned.ignored
        report.bad_names = scanned.bad_names
        files = [f for f in scanned.files if f.path not in settling] if settling else scanned.files
        plan = plan_run(library, root, files, report, keep=settling, folders=scanned.folders,
                        unreadable=scanned.unreadable_dirs)
        if plan.removed_ids or plan.todo:
            library.mark_vectors_dirty()
            dirty = True
        vectors.remove(list(plan.removed_ids))
        report.removed = len(plan.removed_ids)
        if plan.todo:
            from tqdm import tqdm

            bar = tqdm(total=len(plan.todo), unit="img", disable=not progress, smoothing=0.1, desc="indexing")
            for batch in run(root, plan.todo, backbone, batch_size=batch_size, workers=workers, engine=engine,
                             embed_in_workers=embed_in_workers, report=report):
                wrote = time.perf_counter()
                write_batch(library, vectors, plan, batch, report)
                report.write_seconds += time.perf_counter() - wrote
                if report.first_written_seconds is None:
                    report.first_written_seconds = time.perf_counter() - started
                bar.update(len(batch.items))
            bar.close()
        # Photos indexed before duplicate signals existed get them now, once.
        report.signals_backfilled = backfill_signals(
            library, root, workers=default_workers() if workers is None else max(1, workers), progress=progress
        )
        if dirty:
            library.save_vectors(vectors, clean=True)
    report.seconds = time.perf_counter() - started
    return report
