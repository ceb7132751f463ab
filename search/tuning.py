"""`lookalike tune`: fine-tune the backbone on the library's labels, keep the tuned weights only if
they are measured better than the frozen representation on held-out labels, then re-embed and refresh what
derives from the vectors (neighbour lists, suggestions, queue clusters).

    labelled photos (+ pseudo-labels: search.pseudo_labels)
                    --cross_fit (search.tune_decision)--> every label scored once, frozen vs tuned
                    --keep (measured better)--> refit on every label, averaged with the folds' candidates
                    --> a new representation, re-embedded

An interrupted re-embedding (a recorded representation with staged vectors, not current) is
resumed by the next `tune_library` instead of training again. torch is imported inside functions.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from indexer.library import Library, LibraryError
from indexer.settings import Settings
from search.tune_decision import DEFAULT_STAGES, NoCandidate, cross_fit, fit_candidate, refit

if TYPE_CHECKING:
    from indexer.backbone import Backbone
    from indexer.finetune import TuneConfig
    from indexer.schema import Representation

log = logging.getLogger(__name__)

MIN_PER_CLASS = 3  # a class needs a photo in each scoring fold, and one more to train with beside it
TUNE_LOCK_FILE = "tune.lock"  # beside the library's database: one tune or revert at a time (CLI and web)
LAST_TUNE_STATE = "last_tune"  # meta key: the last finished tune's report (kept or not) and when

Progress = Callable[[str, int, int], None]  # (phase, done, total): decode, probe, train, score, reembed, refresh


class TuneFailed(Exception):
    """Tuning cannot run (too few labels, no photos indexed, another writer); one line says why."""


@dataclass
class TuneReport:
    """What one `tune_library` call did."""

    kept: bool
    frozen_accuracy: float  # held-out accuracy of a probe on the frozen vectors
    tuned_accuracy: float  # the same on the tuned vectors
    representation: int | None  # the current representation's id afterwards
    reembedded: int = 0  # photos re-embedded by this call
    resumed: bool = False  # an interrupted re-embedding was finished instead of training
    reverted: bool = False  # ... and it was a --revert's (back to a parent): no tune to record
    labelled: int | None = None  # the labels it was tuned on (LAST_TUNE_STATE's "labelled"); None: now's
    stages: int = 0
    epochs: int = 0  # the chosen epoch (0: the probe on the untouched backbone won)
    n_train: int = 0
    n_heldout: int = 0
    seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)  # labelled photos that did not decode
    p_value: float = float("nan")  # how sure the paired comparison is (one-sided sign-flip test)
    loglik_gain: float = float("nan")  # labels' mean log-likelihood, tuned minus frozen (search.tune_decision.keep)
    pseudo_labelled: int = 0  # unlabelled photos a candidate trained on beside the labels (search.pseudo_labels)

    @property
    def gain(self) -> float:
        return self.tuned_accuracy - self.frozen_accuracy

    def as_dict(self) -> dict:
        return {
            "kept": self.kept, "frozen_accuracy": _number(self.frozen_accuracy),
            "tuned_accuracy": _number(self.tuned_accuracy),
            "representation": self.representation, "reembedded": self.reembedded, "resumed": self.resumed,
            "stages": self.stages, "epochs": self.epochs, "n_train": self.n_train, "n_heldout": self.n_heldout,
            "seconds": round(self.seconds, 1), "p_value": _number(round(self.p_value, 4)),
            "loglik_gain": _number(round(self.loglik_gain, 4)), "pseudo_labelled": self.pseudo_labelled,
        }


def _number(x: float) -> float | None:
    """JSON has no NaN: a figure not measured (a resumed revert's) is null."""
    return None if x != x else x


def labelled_photos(library: Library) -> tuple[list[tuple[Path, int]], list[str]]:
    """(photo file, class code) of every indexed, labelled photo whose class has MIN_PER_CLASS
    photos or more, and the class names (code order)."""
    from sqlalchemy import select

    from indexer.schema import INDEXED, Image, Label

    root = library.root
    if root is None:
        raise TuneFailed(f"{library.path} has no photos indexed yet: run `lookalike index` first")
    with library.Session() as s:
        rows = s.execute(select(Image.path, Label.label).join(Label, Label.image_id == Image.id)
                         .where(Image.status == INDEXED).order_by(Image.path)).all()
    counts: dict[str, int] = {}
    for _, label in rows:
        counts[label] = counts.get(label, 0) + 1
    classes = sorted(c for c, n in counts.items() if n >= MIN_PER_CLASS)
    code = {c: i for i, c in enumerate(classes)}
    return [(root / path, code[label]) for path, label in rows if label in code], classes


def pending_representation(library: Library) -> Representation | None:
    """A representation whose re-embedding was interrupted: staged vectors, not current; else one
    made current whose switch was not finished (indexer.reembed.SWITCHING: its FAISS file, head,
    lists and clusters not refreshed yet)."""
    from sqlalchemy import func, select

    from indexer.reembed import SWITCHING
    from indexer.schema import StagedEmbedding

    current = library.current_representation()
    with library.Session() as s:
        rep_id = s.scalar(select(StagedEmbedding.representation_id).group_by(StagedEmbedding.representation_id)
                          .order_by(func.count().desc()).limit(1))
    if rep_id is None or (current is not None and current.id == rep_id):
        switching = library.meta().get(SWITCHING)
        return library.representation(int(switching)) if switching else None
    return library.representation(rep_id)


def tune_lock(library: Library):
    """Hold the library's tune lock; TuneFailed at once when another tune or revert holds it."""
    from indexer.library import file_lock

    return file_lock(library.path / TUNE_LOCK_FILE,
                     busy=TuneFailed(f"another tune or revert is running on {library.path}: wait for it to end"))


def tune_running(library: Library) -> bool:
    """Whether a tune or revert holds the library's lock (this process's or another's)."""
    try:
        with tune_lock(library):
            return False
    except TuneFailed:
        return True


def last_tune(library: Library) -> dict | None:
    """The last finished tune's report (`TuneReport.as_dict()`, plus "labelled" and "finished_at")."""
    return library.state(LAST_TUNE_STATE) or None


def representation_facts(library: Library) -> dict | None:
    """The current representation: its id, parent, weights and what `tune` measured before/after
    (`lookalike status`, `learn` and the About page)."""
    import json

    rep = library.current_representation()
    if rep is None:
        return None
    metrics = json.loads(rep.metrics) if rep.metrics else {}
    return {
        "id": rep.id,
        "parent": rep.parent_id,
        "weights": rep.weights,
        "tuned": rep.parent_id is not None,
        "frozen_accuracy": metrics.get("frozen_accuracy"),
        "tuned_accuracy": metrics.get("tuned_accuracy"),
    }


def tune_library(settings: Settings, library: Library, **options) -> TuneReport:
    """`_tune_library` under the library's tune lock; the report is kept as LAST_TUNE_STATE, a
    resumed tune's too (its figures, as recorded when it was trained: that tune ends only now),
    but not a resumed --revert's, which measured nothing."""
    with tune_lock(library):
        report = _tune_library(settings, library, **options)
    if not report.reverted:
        from search.labelling.labels import labels_fingerprint

        labelled = report.labelled if report.labelled is not None else int(labels_fingerprint(library)[0])
        library.save_state(LAST_TUNE_STATE, {**report.as_dict(), "labelled": labelled, "finished_at": time.time()})
    return report


def _tuned_here(library: Library, rep: Representation) -> bool:
    """Whether `rep` is a tune's result rather than a --revert's target. A tune makes a new
    representation, the child of the current one, and nothing is tuned from it before its switch
    ends (the next tune resumes that first); a revert goes back to a parent, which has a child."""
    return rep.parent_id is not None and not any(r.parent_id == rep.id for r in library.representations())


def _tune_library(
    settings: Settings,
    library: Library,
    *,
    config: TuneConfig | None = None,
    stages: Sequence[int] = DEFAULT_STAGES,
    seed: int = 0,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> TuneReport:
    """Fine-tune on the library's labels and keep the result only if it wins (see the module doc).

    `config`'s `stages` is replaced by each of `stages` in turn in each fold (search.tune_decision).
    Raises TuneFailed,
    indexer.cancel.Cancelled (the library as it was, or a re-embedding the next call resumes).
    """
    from indexer.backbone import BackboneError
    from indexer.finetune import TuneError, save_weights
    from indexer.library import LibraryError
    from indexer.representations import representation_backbone
    from search.labelling.labels import labels_fingerprint
    from search.pseudo_labels import library_pseudo_labeller

    started = time.perf_counter()
    pending = pending_representation(library)
    if pending is not None:
        log.info("resuming the interrupted re-embedding into representation %d", pending.id)
        report = _report_from_metrics(pending)
        report.resumed, report.reverted = True, not _tuned_here(library, pending)
        report.reembedded = _switch(settings, library, pending.id, progress, cancel)
        report.seconds = time.perf_counter() - started
        return report

    current = library.current_representation()
    if current is None:
        raise TuneFailed(f"{library.path} has no photos indexed yet: run `lookalike index` first")
    fingerprint = labels_fingerprint(library)  # the labels it trains on, before any added during the tune
    items, classes = labelled_photos(library)
    if len(classes) < 2:
        raise TuneFailed(f"too few labels to tune: label at least {MIN_PER_CLASS} photos of each of 2 classes "
                         f"or more ({len(items)} usable labelled photos, {len(classes)} classes)")
    try:
        frozen = representation_backbone(library, current, device=settings.device, precision=settings.precision)
    except LibraryError as e:  # its weights file gone or changed
        back = (f"; `lookalike tune --revert` goes back to representation {current.parent_id}"
                if current.parent_id is not None else "")
        raise TuneFailed(f"{e}: restore the file{back}") from None
    try:
        pseudo = library_pseudo_labeller(library, items)
        decision = cross_fit(items, len(classes), frozen, library, config=config, stages=stages,
                             engine=_engine(settings), pseudo=pseudo, seed=seed, progress=progress, cancel=cancel)
        score = decision.score
        report = TuneReport(
            kept=decision.kept, frozen_accuracy=score.frozen_accuracy, tuned_accuracy=score.tuned_accuracy,
            representation=current.id, stages=decision.stages, epochs=decision.epochs, n_train=len(items),
            n_heldout=score.n_heldout, skipped=sorted({str(p) for p, _ in decision.skipped}),
            p_value=decision.p_value, loglik_gain=score.loglik_gain, pseudo_labelled=decision.pseudo_labelled,
            labelled=int(fingerprint[0]),
        )
        log.info("tuned vs frozen on %d held-out labels: %.3f vs %.3f, p = %.3f (%s)", score.n_heldout,
                 score.tuned_accuracy, score.frozen_accuracy, decision.p_value, "kept" if report.kept else "discarded")
        if not report.kept:
            report.seconds = time.perf_counter() - started
            return report
        result = refit(items, len(classes), frozen, decision, config=config, pseudo=pseudo, seed=seed,
                       progress=progress, cancel=cancel)
        saved = save_weights(library, result.state_dict)
    except (TuneError, BackboneError, NoCandidate) as e:
        raise TuneFailed(str(e)) from None
    rep = library.add_representation(
        backbone=frozen.name, weights_file=saved.path, weights=saved.identity, weights_sha256=saved.sha256,
        parent_id=current.id,
        labels={"fingerprint": fingerprint, "classes": classes, "photos": len(items)},
        metrics={"frozen_accuracy": score.frozen_accuracy, "tuned_accuracy": score.tuned_accuracy,
                 "gain": score.gain, "n_train": len(items), "n_heldout": score.n_heldout,
                 "p_value": decision.p_value, "loglik_gain": score.loglik_gain, "stages": decision.stages,
                 "epochs": decision.epochs, "pseudo_labelled": decision.pseudo_labelled,
                 "tune_seconds": round(time.perf_counter() - started, 1)},
    )
    report.representation = rep.id
    report.reembedded = _switch(settings, library, rep.id, progress, cancel)
    report.seconds = time.perf_counter() - started
    return report


def revert_library(
    settings: Settings, library: Library, *, progress: Progress | None = None, cancel: threading.Event | None = None
) -> int:
    """Back to the current representation's parent (re-embedded, crash-safe), then refresh.
    Returns the photos re-embedded. Raises TuneFailed when there is no parent or another tune runs."""
    with tune_lock(library):
        current = library.current_representation()
        if current is None or current.parent_id is None:
            raise TuneFailed(f"{library.path} is in its first representation: there is nothing to revert to")
        return _switch(settings, library, current.parent_id, progress, cancel)


def refresh_after_switch(settings: Settings, library: Library, backbone: Backbone | None = None) -> None:
    """Neighbour lists, the learned head, suggestions and queue clusters on the new vectors."""
    from search.labelling.labeller import Labeller
    from search.searcher import Searcher

    labeller = Labeller(Searcher(library, backbone, settings=settings), k=settings.k, temperature=settings.temperature)
    labeller.retrain()  # the vectors changed: the head is stale and retrains, then the lists refresh
    labeller.clusters()


def _switch(settings: Settings, library: Library, rep_id: int, progress: Progress | None,
            cancel: threading.Event | None) -> int:
    from indexer.reembed import SWITCHING, reembed

    def tick(done: int, total: int) -> None:
        if progress:
            progress("reembed", done, total)

    try:
        done = reembed(library, rep_id, device=settings.device, precision=settings.precision,
                       engine=_engine(settings), runner="ray" if settings.engine == "ray" else settings.runner,
                       batch_size=settings.batch_size,
                       workers=settings.workers, progress=tick, cancel=cancel)
    except LibraryError as e:
        raise TuneFailed(str(e)) from None
    if progress:
        progress("refresh", 0, 1)
    refresh_after_switch(settings, library)
    library.save_state(SWITCHING, None)  # finished: the next tune trains again
    if progress:
        progress("refresh", 1, 1)
    return done.embedded


def _engine(settings: Settings) -> str:
    return "auto" if settings.engine == "ray" else settings.engine


def _report_from_metrics(rep: Representation) -> TuneReport:
    import json

    m = json.loads(rep.metrics or "{}")
    fingerprint = json.loads(rep.labels or "{}").get("fingerprint")  # labels_fingerprint when it was tuned
    return TuneReport(kept=True, frozen_accuracy=float(m.get("frozen_accuracy", float("nan"))),
                      tuned_accuracy=float(m.get("tuned_accuracy", float("nan"))), representation=rep.id,
                      stages=int(m.get("stages", 0)), epochs=int(m.get("epochs", 0)),
                      n_train=int(m.get("n_train", 0)), n_heldout=int(m.get("n_heldout", 0)),
                      p_value=float(m.get("p_value", float("nan"))),
                      loglik_gain=float(m.get("loglik_gain", float("nan"))),
                      pseudo_labelled=int(m.get("pseudo_labelled", 0)),
                      labelled=int(fingerprint[0]) if fingerprint else None)


__all__ = [
    "LAST_TUNE_STATE", "TUNE_LOCK_FILE", "TuneFailed", "TuneReport", "fit_candidate", "labelled_photos", "last_tune",
    "pending_representation", "refresh_after_switch", "representation_facts", "revert_library", "tune_library",
    "tune_lock", "tune_running",
]
