"""Debounced background work: run a job once things have been quiet for a moment, never in the caller's thread."""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections.abc import Callable

log = logging.getLogger(__name__)


class Debouncer:
    """Runs `work` in a daemon thread `delay` seconds after the last `request()`.

    Requests that arrive while `work` runs schedule one more run after it; `request()` only
    records a time and returns, so a web request never waits for the work.
    """

    def __init__(self, work: Callable[[], object], delay: float):
        self.work = work
        self.delay = delay
        self._cond = threading.Condition()
        self._due: float | None = None
        self._thread: threading.Thread | None = None
        self._running = False
        self.runs = 0  # finished runs, for tests and logs
        self.last_error: BaseException | None = None
        _live.add(self)

    def close(self, timeout: float) -> bool:
        """Drop a run not yet started and wait up to `timeout` seconds for one in progress."""
        with self._cond:
            self._due = None
            self._cond.notify_all()
        return self.wait_idle(timeout)

    def request(self) -> None:
        with self._cond:
            self._due = time.monotonic() + self.delay
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="lookalike-retrain", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing is due or running (True), or `timeout` seconds pass (False)."""
        end = time.monotonic() + timeout
        with self._cond:
            while self._due is not None or self._running:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._due is not None and time.monotonic() < self._due:
                    self._cond.wait(self._due - time.monotonic())
                if self._due is None:
                    self._thread = None
                    self._cond.notify_all()
                    return
                self._due = None
                self._running = True
            try:
                self.work()
                self.last_error = None
            except Exception as e:  # a failed retrain keeps the old head; the next label tries again
                self.last_error = e
                log.exception("background retraining failed")
            finally:
                with self._cond:
                    self._running = False
                    self.runs += 1
                    self._cond.notify_all()


_live: weakref.WeakSet[Debouncer] = weakref.WeakSet()


@atexit.register
def _finish_at_exit() -> None:
    """A daemon thread still inside torch when the interpreter finalises aborts the process
    ("terminate called without an active exception", exit status 134): let work in progress end."""
    for debouncer in list(_live):
        debouncer.close(timeout=120)
