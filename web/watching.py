"""`lookalike serve --watch`: the server indexes what changes under its photo root, as it changes.

The watcher (indexer/watch.py) turns file-system events into batches. Each batch is an index run of
the root through the same driver as `lookalike index` (indexer.pipeline.index_folder: the writer
lock, the scan, the plan that keeps a moved photo's row and labels, deletions), on the resident
runner (indexer/runners/resident.py) whose engine stays loaded; then the server's own labeller brings
the neighbour lists, suggestions and the queue's clusters up to date, as `lookalike index` does
after a run. Pages learn of it through /api/status's `watch` key and a banner.

Imported by the API at start-up, so it imports torch only when watching starts.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from flask import Flask

from indexer.library import LibraryError
from web.context import EXTENSION, Services

if TYPE_CHECKING:
    from indexer.report import IndexReport
    from indexer.runners.resident import ResidentRunner
    from indexer.watch import FolderWatcher

log = logging.getLogger(__name__)

WATCH_EXTENSION = "lookalike-watch"


@dataclass
class Progress:
    """What the watcher is doing, for /api/status and the banner. Guarded by `lock`."""

    state: str = "starting"  # starting (the first catch-up run), indexing, idle
    done: int = 0  # photos of the current batch embedded so far
    total: int = 0  # photos the current batch embeds
    batches: int = 0  # batches finished since the server started
    last: dict | None = None  # the last finished batch's counts
    lock: threading.Lock = field(default_factory=threading.Lock)


class Watching:
    """The watcher, the resident runner and the progress of one server's watched root."""

    def __init__(self, svc: Services, root: Path, *, poll: bool = False) -> None:
        from indexer.runners.resident import ResidentRunner
        from indexer.watch import FolderWatcher

        self.svc = svc
        self.root = root
        self.progress = Progress()
        self.runner: ResidentRunner = ResidentRunner(progress=self._on_progress)
        self.watcher: FolderWatcher = FolderWatcher(root, self.run_batch, poll=poll, ignore=[svc.library.path])

    def warm_up(self) -> None:
        """Load the indexing engine in the background; a failure shows up in the first batch instead."""
        try:
            self.runner.warm_up(self.svc.searcher.backbone, self._engine_name())
        except Exception as e:
            log.warning("could not load the model for watched indexing in advance: %s", e)

    def _engine_name(self) -> str:
        engine = self.svc.settings.engine
        return "auto" if engine == "ray" else engine  # the ray runner's engine is auto's

    def _on_progress(self, done: int, total: int) -> None:
        with self.progress.lock:
            self.progress.state, self.progress.done, self.progress.total = "indexing", done, total

    def run_batch(self, settling: frozenset[str]) -> IndexReport:
        """One index run of the root (leaving `settling` files for later), then the suggestions.
        Raises LibraryError when another indexer holds the library (the watcher retries)."""
        from indexer.pipeline import index_folder

        svc, settings = self.svc, self.svc.settings
        with self.progress.lock:
            if self.progress.state != "starting":
                self.progress.state = "indexing"
            self.progress.done = self.progress.total = 0
        try:
            report = index_folder(
                self.root, svc.library, svc.searcher.backbone, batch_size=settings.batch_size, workers=1,
                runner=self.runner, engine=self._engine_name(),
                memory_budget=settings.memory_budget, settling=settling,
            )
            if report.engine:
                with svc.library.Session.begin() as s:
                    svc.library.set_meta(s, engine=report.engine)
            if report.indexed or report.moved or report.removed or report.failed:
                # As `lookalike index` does after a run (search.refresh.update_suggestions), on the
                # server's own labeller: its background trainer retrains the head on new labels.
                svc.labeller.refresh(wait=True)  # this watcher thread may wait; requests never do
                svc.labeller.clusters()
        except BaseException:
            with self.progress.lock:
                self.progress.state = "idle" if self.progress.state == "indexing" else self.progress.state
            raise
        log.info("watched %s: %s", self.root, report.summary())
        with self.progress.lock:
            self.progress.state = "idle"
            self.progress.batches += 1
            self.progress.last = {
                "indexed": report.indexed, "moved": report.moved, "removed": report.removed,
                "failed": sum(report.failed.values()), "seconds": round(report.seconds, 2),
                "finished_at": time.time(),
            }
        return report

    def status(self) -> dict:
        """The `watch` key of /api/status."""
        with self.progress.lock:
            p = self.progress
            return {
                "root": str(self.root), "observer": self.watcher.observer_kind, "state": p.state,
                "done": p.done, "total": p.total, "waiting": self.watcher.settling, "batches": p.batches,
                "last": p.last, "error": self.watcher.error,
            }


def start_watching(app: Flask, *, poll: bool = False) -> Watching:
    """Watch the library's photo root from now on, starting with a catch-up run (what changed while
    nobody watched, or what a killed run left). Raises LibraryError when there is no root to watch."""
    svc: Services = app.extensions[EXTENSION]
    if svc.library.read_only:
        raise LibraryError(f"cannot watch: {svc.library.path} is read-only here, and watching writes to it")
    root = svc.library.root
    if root is None:
        raise LibraryError(f"{svc.library.path} has no photo folder yet: index one before watching it")
    if not root.is_dir():
        raise LibraryError(f"cannot watch {root}, the library's photo folder: it is not a folder")
    watching = Watching(svc, root, poll=poll)
    app.extensions[WATCH_EXTENSION] = watching
    app.context_processor(lambda: {"watching_folder": True})
    threading.Thread(target=watching.warm_up, name="lookalike-watch-warm-up", daemon=True).start()
    try:
        watching.watcher.start()
    except OSError as e:
        raise LibraryError(f"cannot watch {root}: {e}") from None
    return watching


def watch_status(app: Flask) -> dict | None:
    """The watcher's status, or None when this server does not watch."""
    watching = app.extensions.get(WATCH_EXTENSION)
    return watching.status() if watching is not None else None
