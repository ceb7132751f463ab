"""What a request reaches: the app's long-lived services and this request's database session.

A leaf module (as flaskr's db.py): blueprints import it, never the app factory.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from flask import current_app, g
from sqlalchemy.orm import Session

from indexer.library import Library
from search.labelling.labeller import Labeller
from search.searcher import Searcher
from web.settings import Settings
from web.thumbs import Thumbnails

EXTENSION = "lookalike"

log = logging.getLogger(__name__)


@dataclass
class Services:
    """What every request shares: built once per app, safe to use from the server's threads."""

    settings: Settings
    library: Library
    searcher: Searcher
    labeller: Labeller
    thumbnails: Thumbnails
    # Label writes and the labeller's cache updates happen together, one writer at a time.
    write_lock: threading.Lock = field(default_factory=threading.Lock)
    # Results that are slow to compute and change only with the labels or the index.
    memo: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    memo_lock: threading.Lock = field(default_factory=threading.Lock)  # held briefly: memo_locks, jobs
    memo_locks: dict[str, threading.Lock] = field(default_factory=dict)  # one per memoized name
    jobs: dict[str, Job] = field(default_factory=dict)  # `in_background`'s, by name

    def memoized(self, name: str, key: Any, compute):
        """compute() once per distinct key (the last key only); concurrent callers of the same name
        wait, those of another name do not (a slow label check never holds up the map)."""
        with self.memo_lock:
            lock = self.memo_locks.setdefault(name, threading.Lock())
        with lock:
            hit = self.memo.get(name)
            if hit is not None and hit[0] == key:
                return hit[1]
            value = compute()
            self.memo[name] = (key, value)
            return value


@dataclass
class Job:
    """A slow result computed in a thread for one key: done/total as it goes, then value or error."""

    key: Any
    done: int = 0
    total: int = 0
    value: Any = None
    error: BaseException | None = None
    finished: threading.Event = field(default_factory=threading.Event)

    def progress(self, done: int, total: int) -> None:
        self.done, self.total = done, total


def in_background(svc: Services, name: str, key: Any, compute, wait: float) -> Job:
    """The job computing `compute(job.progress)` for `key`, started in a thread if none is, after
    waiting up to `wait` seconds for it to finish. One job per name runs at a time: a request with a
    new key gets the running job back (its key differs) and starts its own once that one ends."""
    with svc.memo_lock:
        job = svc.jobs.get(name)
        if job is None or (job.finished.is_set() and (job.key != key or job.error is not None)):  # a failure: retried
            job = Job(key)
            svc.jobs[name] = job

            def run(job: Job = job) -> None:
                try:
                    job.value = compute(job.progress)
                except Exception as e:  # shown to the next request, as the synchronous call would raise
                    log.exception("background %s failed", name)
                    job.error = e
                finally:
                    job.finished.set()

            threading.Thread(target=run, name=f"lookalike-{name}", daemon=True).start()
    job.finished.wait(wait)
    return job


def services() -> Services:
    """The current app's long-lived services."""
    return current_app.extensions[EXTENSION]


def get_session() -> Session:
    """This request's SQLAlchemy session, opened on first use and closed at teardown."""
    if "db_session" not in g:
        g.db_session = services().library.Session()
    return g.db_session


def close_session(exc: BaseException | None = None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        session.close()
