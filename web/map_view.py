"""The Map page and GET /api/map: every photo placed by similarity; the layout is computed in the background."""

from __future__ import annotations

import json
import logging
import threading
import time

import numpy as np
from flask import Blueprint, Response, current_app, render_template

from indexer.library import Library
from search.labelling.labeller import SUGGESTIONS_STATE, Labeller
from search.map.store import MapBusy, MapColumns, MapState, pending, read_points, update_map
from web import labelling
from web.browse import known_labels
from web.context import get_session, services

log = logging.getLogger(__name__)

bp = Blueprint("map", __name__)

JOB = "lookalike_map_job"
MAX_POINTS = 250_000  # beyond this the page gets a random sample: JSON, parsing and drawing stay under ~2 s
RETRY_AFTER_FAILURE_S = 60


class MapJob:
    """Brings the stored map up to date in a background thread; requests never wait for it."""

    def __init__(self, library: Library, labeller: Labeller) -> None:
        self.library = library
        self.labeller = labeller
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._refit = False
        self._suggestions_ready = False
        self.error: str | None = None
        self._failed_at = 0.0
        self._phase = "layout"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def laying_out(self) -> bool:
        """Whether the points themselves are being computed (not only the suggestions after them)."""
        return self.running and self._phase == "layout"

    def poke(self, *, refit: bool = False) -> bool:
        """Start the computation if the map is behind (or `refit`); True while one is running."""
        with self._lock:
            if self.running:
                return True
            if self.error and not refit and time.monotonic() - self._failed_at < RETRY_AFTER_FAILURE_S:
                return False
            behind = pending(self.library)
            if not refit and behind.current and self._suggestions_ready:
                return False
            if not behind.total:
                return False
            self._refit = refit
            self._phase = "layout"
            self._thread = threading.Thread(target=self._run, name="lookalike-map", daemon=True)
            self._thread.start()
            return True

    def _run(self) -> None:
        try:
            report = update_map(self.library, refit=self._refit)
            log.info("%s", report.summary())
            self.error = None
        except MapBusy:
            pass  # `lookalike map` is at it: the next request sees its result
        except Exception as e:  # the page shows it; the log has the traceback
            log.exception("computing the map of %s failed", self.library.path)
            self.error, self._failed_at = str(e) or type(e).__name__, time.monotonic()
            return
        self._phase = "suggestions"
        try:
            # Suggested labels colour the map: have them once, as `lookalike serve` warms them up.
            self.labeller.refresh(wait=True)  # a background job: it may wait for an indexer's run
            self._suggestions_ready = True
        except Exception:
            log.exception("computing suggestions for the map failed")


def job() -> MapJob:
    extensions = current_app.extensions
    with _job_lock:
        if JOB not in extensions:
            svc = services()
            extensions[JOB] = MapJob(svc.library, svc.labeller)
        return extensions[JOB]


_job_lock = threading.Lock()


@bp.get("/map")
def page():
    return render_template("map.html", known_labels=known_labels(get_session()), max_points=MAX_POINTS)


@bp.get("/api/map")
def api_map():
    """Every photo's point as columns; see web/API.md. Starts the layout in the background if it is behind."""
    map_job = job()
    map_job.poke()
    computing = map_job.laying_out
    library = services().library
    state = MapState.load(library)
    meta = library.meta()
    key = (state.computed_at if state else None, labelling.label_version(get_session()), meta.get(SUGGESTIONS_STATE))
    body = services().memoized("map", key, lambda: _columns_json(library, state))
    status = json.dumps({"computing": computing, "suggesting": map_job.running and not computing,
                         "error": map_job.error})
    # The cached body is a JSON object: add this request's status without re-encoding the columns.
    return Response(body[:-1] + ',"status":' + status + "}", mimetype="application/json")


@bp.post("/api/map/refit")
def refit():
    """Fit the layout again in the background (202); GET /api/map shows when it is done."""
    job().poke(refit=True)
    status = {"computing": True, "suggesting": False, "error": None}
    return Response(json.dumps({"status": status}), 202, mimetype="application/json")


def _columns_json(library: Library, state: MapState | None) -> str:
    columns = read_points(library)
    count = len(columns.ids)
    if count > MAX_POINTS:
        keep = np.sort(np.random.default_rng(0).choice(count, MAX_POINTS, replace=False))
        columns = columns.take(keep)
    payload = {
        "count": count,
        "shown": len(columns.ids),
        "downsampled": len(columns.ids) < count,
        "method": state.method if state else None,
        "computed_at": state.computed_at if state else None,
        "labels": columns.labels,
        "folders": columns.folders,
        "points": _points(columns),
    }
    return json.dumps(payload, separators=(",", ":"))


def _points(c: MapColumns) -> dict:
    return {
        "id": c.ids.tolist(),
        "x": np.round(c.x.astype(np.float64), 4).tolist(),
        "y": np.round(c.y.astype(np.float64), 4).tolist(),
        "label": c.label.tolist(),
        "suggested": c.suggested.tolist(),
        "confidence": np.round(c.confidence.astype(np.float64), 3).tolist(),
        "folder": c.folder.tolist(),
    }
