"""The app factory: settings, services and blueprints put together."""

from __future__ import annotations

import logging
import secrets
from typing import Any

from flask import Flask
from flask.json.provider import DefaultJSONProvider

from indexer.library import Library
from search.labelling.labeller import Labeller
from search.searcher import Searcher
from web.context import EXTENSION, Services, close_session
from web.duplicates import DUPLICATES_WAIT
from web.ids import IdConverter
from web.label_check import LABEL_CHECK_WAIT
from web.settings import Settings
from web.thumbs import Thumbnails

log = logging.getLogger(__name__)


class WrittenOrderJSON(DefaultJSONProvider):
    sort_keys = False  # payloads keep their written order: id and path first

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        """Parse JSON; input nested too deeply for Python's parser is invalid JSON like any other
        (a ValueError, which request.get_json turns into a 400), not a RecursionError and a 500."""
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None


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
        DUPLICATES_WAIT=DUPLICATES_WAIT,  # seconds a request waits for the duplicates before "pending"
        LABEL_CHECK_WAIT=LABEL_CHECK_WAIT,  # seconds a request waits for a new label check, then the last answers
    )
    app.json = WrittenOrderJSON(app)
    # Every <int:...> in a route is an id: bounded to SQLite's 64 bits (set before any route).
    app.url_map.converters["int"] = IdConverter

    # Requests arrive one query at a time on concurrent threads: FAISS's OpenMP team only adds
    # start-up and contention to a single query (p50 1.5 -> 0.5 ms, p99 15 -> 1.7 ms at 3.8k).
    import faiss

    faiss.omp_set_num_threads(1)

    if searcher is None:
        library = Library(settings.library)
        searcher = Searcher(library, settings=settings)
    # Suggestions come from the head learned on the labels, retrained in the background after changes.
    labeller = Labeller(searcher, k=settings.k, temperature=settings.temperature, background=True)
    app.extensions[EXTENSION] = Services(
        settings=settings,
        library=searcher.library,
        searcher=searcher,
        labeller=labeller,
        thumbnails=Thumbnails(searcher.library.path / "thumbs"),
    )

    from web import api, errors, label_check, map_view, media, security, tuning, views

    security.init_app(app)
    errors.init_app(app)
    app.register_blueprint(views.bp)
    app.register_blueprint(media.bp)
    app.register_blueprint(api.bp, url_prefix="/api")
    app.register_blueprint(map_view.bp)
    app.register_blueprint(tuning.bp, url_prefix="/api")
    app.register_blueprint(label_check.bp)
    app.teardown_appcontext(close_session)
    return app
