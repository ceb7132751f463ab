"""What a request reaches: the app's long-lived services and this request's database session.

A leaf module (as flaskr's db.py): blueprints import it, never the app factory.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from flask import current_app, g
from sqlalchemy.orm import Session

from indexer.library import Library
from indexer.settings import Settings
from search.learning import LearningLabeller
from search.searcher import Searcher
from web.thumbs import Thumbnails

EXTENSION = "lookalike"


@dataclass
class Services:
    """What every request shares: built once per app, safe to use from the server's threads."""

    settings: Settings
    library: Library
    searcher: Searcher
    labeller: LearningLabeller
    thumbnails: Thumbnails
    # Label writes and the labeller's cache updates happen together, one writer at a time.
    write_lock: threading.Lock = field(default_factory=threading.Lock)
    # Results that are slow to compute and change only with the labels or the index.
    memo: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    memo_lock: threading.Lock = field(default_factory=threading.Lock)

    def memoized(self, name: str, key: Any, compute):
        """compute() once per distinct key (the last key only); concurrent callers wait."""
        with self.memo_lock:
            hit = self.memo.get(name)
            if hit is not None and hit[0] == key:
                return hit[1]
            value = compute()
            self.memo[name] = (key, value)
            return value


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
