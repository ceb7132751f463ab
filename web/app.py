"""The app factory, the long-lived services it holds, and the per-request database session."""

from __future__ import annotations

import logging
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, current_app, g
from sqlalchemy.orm import Session

from indexer.library import Library
from indexer.settings import Settings
from search.knn import Labeller
from search.searcher import Searcher
from web.thumbs import Thumbnails

log = logging.getLogger(__name__)

EXTENSION = "lookalike"


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


def create_app(settings: Settings | None = None, *, searcher: Searcher | None = None) -> Flask:
    """A Flask app serving `settings.library` (or the library of `searcher`, when given).

    Raises indexer.library.LibraryError when the library does not exist.
    """
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=secrets.token_bytes(32),  # signs the session cookie; a restart forgets unlocks
        MAX_CONTENT_LENGTH=int(settings.max_upload_mb * 1024 * 1024),
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_HTTPONLY=True,
    )
    app.json.sort_keys = False  # payloads keep their written order: id and path first
    if settings.host in ("127.0.0.1", "localhost"):
        # A page on another site that resolves its own name to 127.0.0.1 (DNS rebinding) would be
        # "same origin" to the browser: refuse every Host but the loopback names.
        app.config["TRUSTED_HOSTS"] = ["127.0.0.1", "localhost"]

    # Requests arrive one query at a time on concurrent threads: FAISS's OpenMP team only adds
    # start-up and contention to a single query (p50 1.5 -> 0.5 ms, p99 15 -> 1.7 ms at 3.8k).
    import faiss

    faiss.omp_set_num_threads(1)

    if searcher is None:
        library = Library(settings.library)
        searcher = Searcher(library)
    labeller = Labeller(searcher, k=settings.k, temperature=settings.temperature)
    app.extensions[EXTENSION] = Services(
        settings=settings,
        library=searcher.library,
        searcher=searcher,
        labeller=labeller,
        thumbnails=Thumbnails(searcher.library.path / "thumbs"),
    )

    from web import api, errors, media, security, views

    security.init_app(app)
    errors.init_app(app)
    app.register_blueprint(views.bp)
    app.register_blueprint(media.bp)
    app.register_blueprint(api.bp, url_prefix="/api")
    app.teardown_appcontext(close_session)
    return app


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
