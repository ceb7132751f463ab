"""The web's tune: `search.tuning` run in a background thread, its progress in /api/status.

    POST /api/tune          202 {"tuning": ...}: started; 409: one is running (here or from the
                            CLI: the library's tune lock) or too few labels; 503: read-only library
    POST /api/tune/revert   the same, back to the current representation's parent
    GET  /api/status        gains "tuning" once a tune or revert started in this server

Requests never wait on it: the thread opens its own Library, holds the tune lock, and the app's
searcher and labeller pick up the new vectors and head as they do after `lookalike tune`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field

from flask import Blueprint, abort, current_app, jsonify

from indexer.library import READ_ONLY_MESSAGE, Library
from search.labelling.labels import labels_fingerprint
from search.tuning import (
    MIN_PER_CLASS,
    TuneFailed,
    labelled_photos,
    last_tune,
    representation_facts,
    revert_library,
    tune_library,
    tune_running,
)
from web.context import services

log = logging.getLogger(__name__)

bp = Blueprint("tuning", __name__)

EXTENSION = "lookalike-tuning"
# The queue suggests tuning (again) once this many labelled photos are usable and, after a tune,
# once the labels grew by AGAIN_SHARE and AGAIN_MIN photos: in issue 18's measurements the gain of
# tuning rose with the labels (3 -> 8 a class: +5.5 -> +4 points over a probe that itself gained 9).
FIRST_TUNE_LABELS = 30
AGAIN_SHARE = 0.5
AGAIN_MIN = 20


@dataclass
class TuneJob:
    """One tune or revert as the pages see it."""

    action: str  # "tune" or "revert"
    state: str = "running"  # running, done, failed
    phase: str = "start"
    done: int = 0
    total: int = 0
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    report: dict | None = None
    error: str | None = None

    def progress(self, phase: str, done: int, total: int) -> None:
        self.phase, self.done, self.total = phase, done, total

    def payload(self) -> dict:
        return {
            "action": self.action, "state": self.state, "phase": self.phase, "done": self.done, "total": self.total,
            "started_at": self.started_at, "finished_at": self.finished_at, "report": self.report,
            "error": self.error,
        }


@dataclass
class Tuner:
    """The app's one background tune at a time."""

    job: TuneJob | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    thread: threading.Thread | None = None


def tuner() -> Tuner:
    return current_app.extensions.setdefault(EXTENSION, Tuner())


def status_payload() -> dict | None:
    """/api/status's "tuning": None until a tune or revert started in this server."""
    job = tuner().job
    return job.payload() if job is not None else None


def usable_labels(library: Library) -> tuple[int, int] | str:
    """(labelled photos a tune can use, their classes), or why none can be (one line); computed once
    per state of the labels and the index (a pass over every labelled photo)."""
    svc = services()
    key = (labels_fingerprint(library), tuple(library.vectors_fingerprint()))

    def compute() -> tuple[int, int] | str:
        try:
            items, classes = labelled_photos(library)
        except TuneFailed as e:
            return str(e)
        return len(items), len(classes)

    return svc.memoized("tune_labels", key, compute)


def readiness(library: Library) -> str | None:
    """Why a tune cannot start now (one line), or None."""
    if library.read_only:
        return READ_ONLY_MESSAGE
    if tune_running(library):
        return "a tune or revert is already running on this library"
    usable = usable_labels(library)
    if isinstance(usable, str):
        return usable
    items, classes = usable
    if classes < 2:
        return (f"too few labels to tune: label at least {MIN_PER_CLASS} photos of each of 2 classes or more "
                f"({items} usable labelled photos, {classes} classes)")
    return None


def start(action: str) -> TuneJob:
    """Start a tune or revert in a thread. :raise 409: one runs or it cannot; 503: read-only."""
    svc = services()
    library = svc.library
    if library.read_only:
        abort(503, description=READ_ONLY_MESSAGE)
    t = tuner()
    with t.lock:
        if t.job is not None and t.job.state == "running":
            abort(409, description=f"a {t.job.action} is already running: see /api/status")
        if action == "tune":
            why = readiness(library)
        else:
            current = library.current_representation()
            why = ("a tune or revert is already running on this library" if tune_running(library) else
                   None if current is not None and current.parent_id is not None else
                   "this library is in its first representation: there is nothing to revert to")
        if why is not None:
            abort(409, description=why)
        job = TuneJob(action)
        t.job = job
        settings = svc.settings
        path = library.path
        config = current_app.config.get("TUNE_CONFIG")  # tests: a short indexer.finetune.TuneConfig

        def run() -> None:
            try:
                with Library(path) as lib:
                    if action == "tune":
                        job.report = tune_library(settings, lib, config=config, progress=job.progress).as_dict()
                    else:
                        job.report = {"reembedded": revert_library(settings, lib, progress=job.progress)}
                job.state = "done"
            except TuneFailed as e:
                job.state, job.error = "failed", str(e)
            except Exception as e:  # shown on the page; the library is as it was or resumable
                log.exception("background %s failed", action)
                job.state, job.error = "failed", f"{type(e).__name__}: {e}"
            finally:
                job.finished_at = time.time()

        t.thread = threading.Thread(target=run, name=f"lookalike-{action}", daemon=True)
        t.thread.start()
    return job


@bp.post("/tune")
def post_tune():
    return jsonify(tuning=start("tune").payload()), 202


@bp.post("/tune/revert")
def post_revert():
    return jsonify(tuning=start("revert").payload()), 202


def about_facts() -> dict:
    """The About page's tune section: the representation, the last tune, whether one can start."""
    library = services().library
    last = last_tune(library)
    expected = None
    if last is not None and last.get("tuned_accuracy") is not None and last.get("frozen_accuracy") is not None:
        expected = last["tuned_accuracy"] - last["frozen_accuracy"]
    # The keep rule's measure (search.tune_decision.keep), in words: the mean log-likelihood gain as
    # the change of the labels' (geometric) mean likelihood, in whole percent (as web/static/tuning.js).
    likelier = None
    if last is not None and last.get("loglik_gain") is not None:
        likelier = round(100 * math.expm1(last["loglik_gain"]))  # an int: "%+d" never shows "-0"
    return {
        "representation": representation_facts(library),
        "last": last,
        "expected_gain": expected,
        "likelier": likelier,
        "job": status_payload(),
        "blocked": readiness(library),
    }


def hint() -> str | None:
    """The queue page's line when enough labels arrived since the last tune that tuning is likely to help."""
    library = services().library
    if library.read_only or (tuner().job is not None and tuner().job.state == "running"):  # type: ignore[union-attr]
        return None
    usable = usable_labels(library)
    if isinstance(usable, str) or usable[1] < 2:
        return None
    items = usable[0]
    last = last_tune(library)
    if last is None:
        if items < FIRST_TUNE_LABELS:
            return None
        return (f"{items} labelled photos: tuning the model on them may make suggestions better "
                "(About page, Tune).")
    labelled = int(labels_fingerprint(library)[0])  # what LAST_TUNE_STATE's "labelled" counts
    before = int(last.get("labelled") or 0)
    if labelled - before < max(AGAIN_MIN, AGAIN_SHARE * before):
        return None
    return (f"{labelled - before} photos labelled since the last tune ({before} then): tuning again is "
            "likely to help (About page, Tune).")
