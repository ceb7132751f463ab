"""Watching a photo root: file-system events become debounced batches, once the files stop changing.

watchdog's observer (inotify on Linux; polling where no native observer runs, or with `poll=True`)
reports what changed. `FolderWatcher` gathers the events and calls `on_batch(settling)` once the
folder has been quiet for `debounce` seconds. The batch itself re-reads the whole root (the
pipeline's scan and plan: moves are found by content hash, deletions remove rows), so an event that
is lost or coalesced loses nothing; the events only say *when* to run, and which files are still
being written: those are passed as `settling`, for the batch to leave alone until they are stable.

A batch waits at most MAX_DELAY seconds for quiet, so a long copy or a slow writer does not hold
back the photos that are already whole.

A file is stable when its size and mtime are the same at two looks and, where the observer reports
closes (inotify), no writer holds it open after writing. A copy from a phone or a slow network
share is indexed once, whole, never half-written.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from indexer.imageio import EXTENSIONS

log = logging.getLogger(__name__)

DEBOUNCE = 0.5  # seconds of quiet before a batch starts
MAX_DELAY = 3.0  # seconds a change waits at most for quiet: a long copy (or a slow writer) goes on
SETTLE = 2.0  # seconds a file's size must hold still when the observer does not report closes
OPEN_WAIT = 60.0  # seconds a file open for writing waits at most for its close (a writer that hung)
RETRY = 2.0  # seconds before a failed batch (the library busy with another indexer) is tried again
POLL_INTERVAL = 1.0  # seconds between the polling observer's snapshots


@dataclass
class _Look:
    """What the watcher knows of one changed file."""

    changed_at: float  # monotonic time of its last event or of the last change seen by a look
    stat: tuple[int, int] | None  # (size, mtime_ns) at that time; None when it could not be read
    writing: bool  # written to and not closed since (only where the observer reports closes)


class FolderWatcher:
    """Calls `on_batch(settling)` on its own thread after changes under `root`, one batch at a time.

    `settling` holds the paths (relative to root, '/'-separated) of files still being written. An
    exception from `on_batch` (another indexer holds the library) is logged and the batch is tried
    again after RETRY seconds; no change is forgotten. `ignore` lists folders whose events do not
    count (the library, when it lies inside the root).
    """

    def __init__(
        self, root: Path, on_batch: Callable[[frozenset[str]], object], *, poll: bool = False,
        debounce: float = DEBOUNCE, settle: float = SETTLE, ignore: Iterable[Path] = (),
    ) -> None:
        self.root = Path(root).resolve()
        self.on_batch = on_batch
        self.poll = poll
        self.debounce = debounce
        self.settle = settle
        self._ignore = tuple(str(Path(p).resolve()) + os.sep for p in ignore)
        self._cond = threading.Condition()
        self._touched: dict[str, _Look] = {}
        self._dirty = False  # a change that is not a file being written: a deletion, a move, a folder
        self._last_event = 0.0
        self._first_event: float | None = None  # the first event since the last batch began
        self._retry_at = 0.0
        self._stopping = False
        self._closes = False  # whether the running observer reports closes (inotify does)
        self._observer = None
        self._thread: threading.Thread | None = None
        self.error: str | None = None  # the last failed batch's message, None once one succeeds
        self.observer_kind = ""

    # -- life cycle ---------------------------------------------------------------------------------

    def start(self, *, catch_up: bool = True) -> None:
        """Start observing; with `catch_up`, run a first batch at once for what changed while nobody
        watched (or what a killed batch left). Raises OSError if the root cannot be watched at all."""
        self._observer = self._start_observer()
        if catch_up:
            self.request()
        self._thread = threading.Thread(target=self._loop, name="lookalike-watch", daemon=True)
        self._thread.start()

    def _start_observer(self):
        from watchdog.observers.polling import PollingObserver

        handler = _Handler(self)
        if not self.poll:
            from watchdog.observers import Observer

            observer = Observer()
            try:
                observer.schedule(handler, str(self.root), recursive=True)
                observer.start()
            except OSError as e:  # inotify's watch or instance limit, a file system without events
                log.warning("cannot watch %s with %s (%s): polling every %.0f s instead",
                            self.root, type(observer).__name__, e, POLL_INTERVAL)
            else:
                self.observer_kind = type(observer).__name__
                self._closes = "Inotify" in self.observer_kind
                return observer
        observer = PollingObserver(timeout=POLL_INTERVAL)
        observer.schedule(handler, str(self.root), recursive=True)
        observer.start()
        self.observer_kind = "PollingObserver"
        self._closes = False
        return observer

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def request(self) -> None:
        """Ask for a batch (a full re-read of the root) as if something had changed."""
        with self._cond:
            self._dirty = True
            self._cond.notify_all()

    @property
    def settling(self) -> int:
        """How many changed files wait for a batch (still being written, or not yet looked at)."""
        with self._cond:
            return len(self._touched)

    # -- events (the observer's thread) -------------------------------------------------------------

    def _relative(self, path: str) -> str | None:
        """`path` relative to the root if it may be a photo the scan would find, else None."""
        if path.startswith(self._ignore) or (path + os.sep).startswith(self._ignore):
            return None
        try:
            rel = Path(path).relative_to(self.root)
        except ValueError:
            return None
        if any(part.startswith(".") for part in rel.parts):  # the scan skips hidden entries
            return None
        return rel.as_posix()

    def on_event(self, kind: str, path: str, is_directory: bool, dest: str | None = None) -> None:
        if kind in ("opened", "closed_no_write"):  # readers, the indexer included: nothing changed
            return
        rel = self._relative(path)
        rel_dest = self._relative(dest) if dest else None
        if rel is None and rel_dest is None:
            return
        now = time.monotonic()
        with self._cond:
            if is_directory:
                if kind in ("created", "deleted", "moved"):  # its files come and go without events of their own
                    self._dirty = True
                    self._last_event = now
                    self._first_event = self._first_event or now
                    self._cond.notify_all()
                return
            if kind == "moved":
                if rel is not None and _is_photo(rel):
                    self._touched.pop(rel, None)
                    self._dirty = True
                if rel_dest is not None and _is_photo(rel_dest):  # a rename is whole: written before it
                    self._touched[rel_dest] = _Look(now, _stat(dest), False)  # type: ignore[arg-type]
            elif rel is None or not _is_photo(rel):
                return
            elif kind == "deleted":
                self._touched.pop(rel, None)
                self._dirty = True
            elif kind == "closed":
                self._touched[rel] = _Look(now, _stat(path), False)
            else:  # created, modified, attrib; only a write says a writer holds it open (a file in a
                # folder moved in is reported created, and is never closed)
                self._touched[rel] = _Look(now, _stat(path), self._closes and kind == "modified")
            self._last_event = now
            self._first_event = self._first_event or now
            self._cond.notify_all()

    # -- batches (this watcher's thread) --------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
                if not self._dirty and not self._touched:
                    self._cond.wait()
                    continue
                now = time.monotonic()
                quiet = self._last_event + self.debounce
                if self._first_event is not None:  # events never stop: files being written say so
                    quiet = min(quiet, self._first_event + MAX_DELAY)
                wait = max(quiet, self._retry_at) - now
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                ready, settling = self._sort(now)
                if not self._dirty and not ready:
                    self._cond.wait(min(self.settle, 0.25 + self.debounce))
                    continue
                self._dirty = False
                self._first_event = None
            try:
                self.on_batch(frozenset(settling))
            except Exception as e:  # the library busy with another indexer, a full disk: try again
                log.warning("watched batch failed, retrying in %.0f s: %s", RETRY, e)
                with self._cond:
                    self.error = str(e)
                    self._dirty = True
                    self._retry_at = time.monotonic() + RETRY
                continue
            with self._cond:
                self.error = None
                for rel, look in ready.items():
                    if self._touched.get(rel) is look:  # not touched again while the batch ran
                        del self._touched[rel]

    def _sort(self, now: float) -> tuple[dict[str, _Look], set[str]]:
        """(ready, settling) among the touched files; looks at each one's size again."""
        ready: dict[str, _Look] = {}
        settling: set[str] = set()
        hold = self.debounce if self._closes else self.settle
        for rel, look in self._touched.items():
            now_stat = _stat(str(self.root / rel))
            if now_stat != look.stat:
                look.stat, look.changed_at = now_stat, now
                settling.add(rel)
            elif now_stat is not None and (look.writing or now_stat[0] == 0) and now - look.changed_at < OPEN_WAIT:
                settling.add(rel)  # open for writing, or still empty (created, its bytes yet to come)
            elif now_stat is not None and now - look.changed_at < hold:
                settling.add(rel)
            else:  # stable, or gone (the batch's scan drops it)
                ready[rel] = look
        return ready, settling


class _Handler:
    """watchdog's event handler protocol (`dispatch`), handing each event to the watcher."""

    def __init__(self, watcher: FolderWatcher) -> None:
        self.watcher = watcher

    def dispatch(self, event) -> None:
        if event.event_type == "events_lost":  # inotify's queue overflowed: re-read everything
            self.watcher.request()
            return
        dest = getattr(event, "dest_path", "") or None
        self.watcher.on_event(event.event_type, _text(event.src_path), event.is_directory,
                              _text(dest) if dest else None)


def _text(path: str | bytes) -> str:
    return os.fsdecode(path)


def _is_photo(rel: str) -> bool:
    return os.path.splitext(rel)[1].lower() in EXTENSIONS


def _stat(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns
