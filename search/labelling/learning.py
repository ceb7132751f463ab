"""A labeller that learns: the head trained on the library's labels, stored beside it, behind every suggestion.

`LearningLabeller` is a `Labeller` whose full refresh writes the chosen head's calibrated
predictions into the stored suggestions, and whose queue follows `search.labelling.queue_order`. A label
change still re-votes its dependants by k-NN at once (cheap); retraining then refreshes every
suggestion, in a background thread when `background` is set (the web app), at once otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sqlalchemy import delete, func, insert, select

from indexer.schema import INDEXED, Image, Label, SuggestedLabel
from search.labelling.calibration import with_temperature
from search.labelling.debouncer import Debouncer
from search.labelling.labeller import DEFAULT_K, DEFAULT_TEMPERATURE, SUGGESTIONS_STATE, Labeller, Suggestion
from search.labelling.labels import labels_fingerprint
from search.labelling.learned_head import KNN, PROBE, PROJECTION, Head, Probe, projected_knn, train_head
from search.labelling.learned_head import blend as blend_probabilities
from search.labelling.queue_order import Clusters, assign, cluster_count, fit_centres, queue_order, sample_positions
from search.searcher import Searcher

log = logging.getLogger(__name__)

HEAD_FILE = "head.npz"  # beside the library's SQLite file
HEAD_FORMAT = 1
CLUSTERS_FILE = "queue_clusters.npz"  # the queue's k-means, beside the library's SQLite file
REFIT_SHARE = 0.8  # refit the clusters once fewer than this share of photos were there when fitted
PREDICT_CHUNK = 20_000  # photos predicted (lists and vectors read) at a time
RETRAIN_DELAY = 0.5  # seconds of quiet after the last label change before the web retrains


@dataclass(frozen=True)
class Predictions:
    """Every indexed photo's suggestion as columns: class code (-1: none), confidence, margin."""

    ids: npt.NDArray[np.int64]
    winner: npt.NDArray[np.int64]
    confidence: npt.NDArray[np.float64]
    margin: npt.NDArray[np.float64]
    classes: list[str]

    def label(self, i: int) -> str | None:
        return self.classes[self.winner[i]] if self.winner[i] >= 0 else None

    def rows(self, start: int, stop: int) -> list[dict]:
        return [
            {"image_id": int(self.ids[i]), "label": self.label(i), "confidence": float(self.confidence[i]),
             "margin": float(self.margin[i])}
            for i in range(start, min(stop, len(self.ids)))
        ]


@dataclass(frozen=True)
class LabelledSet:
    ids: npt.NDArray[np.int64]
    vectors: npt.NDArray[np.float32]
    labels: list[str]


def labelled_set(library) -> LabelledSet:
    """The labelled photos that have vectors (labels on failed or pending photos are left out)."""
    with library.Session() as s:
        labels = dict(
            s.execute(select(Label.image_id, Label.label).join(Image).where(Image.status == INDEXED)).all()
        )
    if not labels:
        return LabelledSet(np.zeros(0, np.int64), np.zeros((0, library.dim or 0), np.float32), [])
    ids, vectors = library.stored_vectors(sorted(labels))
    return LabelledSet(ids, vectors, [labels[int(i)] for i in ids])


# -- the head on disk ---------------------------------------------------------------------------------


def save_head(path, head: Head, fingerprint: dict) -> str:
    """Write the head atomically; returns the token that names this training."""
    token = uuid.uuid4().hex
    facts = {
        "format": HEAD_FORMAT,
        "token": token,
        "fingerprint": fingerprint,
        "method": head.method,
        "classes": list(head.classes),
        "temperature": head.temperature,
        "accuracy": head.accuracy,
        "threshold": head.threshold,
        "coverage": head.coverage,
        "cv_images": head.cv_images,
        "k": head.k,
        "knn_temperature": head.knn_temperature,
        "blend_weight": head.blend_weight,
        "probe_scale": head.probe.scale if head.probe else None,
    }
    arrays: dict[str, np.ndarray] = {"facts": np.array(json.dumps(facts))}
    if head.probe is not None:
        arrays.update(probe_mean=head.probe.mean, probe_weight=head.probe.weight, probe_bias=head.probe.bias)
    if head.projection is not None:
        arrays["projection"] = head.projection
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.tmp.npz")  # writers: the index, the web
    np.savez(tmp, **arrays)  # type: ignore[arg-type]
    os.replace(tmp, path)
    return token


def load_head(path) -> tuple[Head, dict] | None:
    """(head, facts) from the file, or None when there is none or it is from another format."""
    try:
        with np.load(path, allow_pickle=False) as data:
            facts = json.loads(str(data["facts"]))
            if facts.get("format") != HEAD_FORMAT:
                return None
            probe = (
                Probe(data["probe_mean"], facts["probe_scale"], data["probe_weight"], data["probe_bias"])
                if "probe_weight" in data
                else None
            )
            projection = data["projection"] if "projection" in data else None
    except (OSError, KeyError, ValueError) as e:
        log.warning("ignoring the stored head %s: %s", path, e)
        return None
    head = Head(
        facts["method"], tuple(facts["classes"]), facts["temperature"], facts["accuracy"], facts["threshold"],
        facts["coverage"], facts["cv_images"], facts["k"], facts["knn_temperature"],
        probe=probe, projection=projection, blend_weight=facts["blend_weight"],
    )
    return head, facts


# -- the labeller -------------------------------------------------------------------------------------


class LearningLabeller(Labeller):
    """Suggestions and queue from the head chosen by cross-validation (k-NN until one measures better)."""

    def __init__(
        self,
        searcher: Searcher,
        k: int = DEFAULT_K,
        temperature: float = DEFAULT_TEMPERATURE,
        *,
        background: bool = False,
        retrain_delay: float = RETRAIN_DELAY,
    ):
        super().__init__(searcher, k, temperature)
        self.head_path = self.library.path / HEAD_FILE
        self._head_stamp: tuple | None = None
        self._head: tuple[Head, dict] | None = None
        self._clusters: tuple[list[str], Clusters] | None = None
        self._clusters_lock = threading.Lock()  # one fit at a time; requests wait for it
        self._order: tuple[object, npt.NDArray[np.int64]] | None = None
        self._train_lock = threading.Lock()  # one training at a time
        self.trainer = Debouncer(self.retrain, retrain_delay) if background else None

    # -- the head ---------------------------------------------------------------------------------

    def fingerprint(self) -> dict:
        """What the head is trained on: the labels, the vectors and the vote's settings."""
        return {
            "labels": labels_fingerprint(self.library),
            # The loaded index's (kept by the searcher) saves a pass over a million rows per request.
            "vectors": self.searcher.source or self.library.vectors_fingerprint(),
            "k": self.k,
            "temperature": self.temperature,
        }

    def stored(self) -> tuple[Head, dict] | None:
        """The stored head and its facts (cached until the file changes)."""
        try:
            st = os.stat(self.head_path)
            stamp: tuple | None = (st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            stamp = None
        if stamp != self._head_stamp:
            self._head = load_head(self.head_path) if stamp else None
            self._head_stamp = stamp
        return self._head

    def head(self) -> Head | None:
        stored = self.stored()
        return stored[0] if stored else None

    def labels_changed(self) -> bool:
        """Whether the labels changed since the stored head was trained (or none was)."""
        stored = self.stored()
        return stored is None or stored[1]["fingerprint"]["labels"] != labels_fingerprint(self.library)

    def is_stale(self) -> bool:
        stored = self.stored()
        return stored is None or stored[1]["fingerprint"] != self.fingerprint()

    def retrain(self, *, force: bool = False) -> Head:
        """Train the head on the current labels unless the stored one is current; then refresh."""
        with self._train_lock:
            if force or self.is_stale():
                fingerprint = self.fingerprint()  # before reading: a change while training makes it stale
                data = labelled_set(self.library)
                head = train_head(data.vectors, data.labels, self.k, self.temperature)
                # Predict outside the lock (the slow part: requests keep reading the old suggestions),
                # then swap the head and its suggestions in together.
                self.searcher.reload()
                ready = self.neighbours.current(self.k)
                predictions = self.predict_all(head) if ready else None
                with self._lock:
                    save_head(self.head_path, head, fingerprint)
                    if predictions is not None:
                        self._write(predictions)
                        self._save_state(SUGGESTIONS_STATE, self._suggestions_state())
            self.refresh()  # nothing to do unless the neighbour lists were stale
            return self.head()  # type: ignore[return-value]

    def facts(self) -> dict | None:
        """What the stored head measured (for `learn` and the About page), or None before training."""
        stored = self.stored()
        if stored is None:
            return None
        head, facts = stored
        return {
            "method": head.method,
            "accuracy": head.accuracy,
            "threshold": head.threshold,
            "coverage": head.coverage,
            "cv_images": head.cv_images,
            "classes": len(head.classes),
            "temperature": head.temperature,
            "trained_on": int(facts["fingerprint"]["labels"][0]),  # labels, failed photos' included
            "current": facts["fingerprint"] == self.fingerprint(),
        }

    # -- Labeller hooks ---------------------------------------------------------------------------

    def on_label_changed(self, image_id: int) -> None:
        super().on_label_changed(image_id)
        if self.trainer is not None:
            self.trainer.request()

    def refresh(self, *, force: bool = False, progress: bool = False) -> bool:
        changed = super().refresh(force=force, progress=progress)
        if self.trainer is not None and self.is_stale():
            self.trainer.request()
        return changed

    def _suggestions_state(self, labels: object = ...) -> dict:
        stored = self.stored()
        return {**super()._suggestions_state(labels), "head": stored[1]["token"] if stored else None}

    def _revote(self, image_ids) -> None:
        if image_ids is not None:  # a label click: its dependants by k-NN now, the head later
            super()._revote(image_ids)
            return
        self._write(self.predict_all(self.head()))

    def _write(self, predictions: Predictions) -> None:
        with self.library.Session.begin() as s:
            s.execute(delete(SuggestedLabel))
            for start in range(0, len(predictions.ids), PREDICT_CHUNK):
                s.execute(insert(SuggestedLabel), predictions.rows(start, start + PREDICT_CHUNK))

    # -- predictions ------------------------------------------------------------------------------

    def predict_all(self, head: Head | None = None) -> Predictions:
        """Every indexed photo's label, calibrated confidence and margin by `head` (the stored one).

        PREDICT_CHUNK photos at a time: their stored lists (and, for a learned head, their vectors)
        are read per chunk, so memory stays bounded at a million photos.
        """
        head = head or self.head()
        with self.library.Session() as s:
            labels = dict(s.execute(select(Label.image_id, Label.label)).all())
            top = int(s.scalar(select(func.max(Image.id))) or 0) + 1
        classes = sorted(set(labels.values()) | set(head.classes if head else ()))
        code = {c: i for i, c in enumerate(classes)}
        code_of = np.full(max(top, max(labels, default=0) + 1), -1, dtype=np.int64)  # image id -> class
        for image_id, label in labels.items():
            code_of[image_id] = code[label]
        method = head.method if head else KNN
        lab_ids, lab_vectors = (self.library.stored_vectors(sorted(labels)) if method == PROJECTION
                                else (np.zeros(0, np.int64), None))
        parts = []
        for ids, vectors in self._targets(with_vectors=method != KNN):
            tally = self._tally(ids, code_of, len(classes))
            if head is None or method == KNN:
                p = tally
            elif method == PROJECTION:
                p = projected_knn(vectors, lab_vectors, code_of[lab_ids], head.projection, len(classes),
                                  head.k, head.knn_temperature)
            else:
                p = np.zeros((len(ids), len(classes)))
                p[:, [code[c] for c in head.classes]] = head.probe.probabilities(vectors)  # type: ignore[union-attr]
                if method != PROBE:
                    p = blend_probabilities(p, tally, head.blend_weight)
            parts.append((ids, *summarise(with_temperature(p, head.temperature if head else 1.0))))
        log.info("suggestions of %d images from %s", sum(len(part[0]) for part in parts), method)
        if not parts:
            return Predictions(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros(0), classes)
        ids, winner, confidence, margin = (np.concatenate([part[i] for part in parts]) for i in range(4))
        return Predictions(ids, winner, confidence, margin, classes)

    def _targets(self, *, with_vectors: bool):
        """(ids, vectors or None) of the indexed photos in id order, PREDICT_CHUNK at a time."""
        if with_vectors:
            yield from self.library.iter_vectors(chunk=PREDICT_CHUNK)
            return
        ids = self.library.indexed_ids()
        for start in range(0, len(ids), PREDICT_CHUNK):
            yield ids[start : start + PREDICT_CHUNK], None

    def _tally(self, targets: npt.NDArray[np.int64], code_of: npt.NDArray[np.int64],
               n_classes: int) -> npt.NDArray[np.float64]:
        """k-NN vote shares [len(targets), C] from the stored lists of `targets` (ids in order)."""
        tally = np.zeros((len(targets), n_classes))
        if not len(targets) or not n_classes:
            return tally
        with self.library.engine.connect() as conn:
            raw = conn.exec_driver_sql(
                "SELECT image_id, neighbour_id, score FROM neighbours "
                "WHERE image_id BETWEEN ? AND ? AND rank < ?", (int(targets[0]), int(targets[-1]), self.k)
            ).fetchall()
        if not raw:
            return tally
        arr = np.array(raw, dtype=np.float64)
        img, nb, score = arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64), arr[:, 2]
        c = np.where(nb < len(code_of), code_of[np.minimum(nb, len(code_of) - 1)], -1)
        row = np.searchsorted(targets, img)
        keep = (c >= 0) & (row < len(targets))
        keep[keep] &= targets[row[keep]] == img[keep]
        c, row, score = c[keep], row[keep], score[keep]
        best = np.full(len(targets), -np.inf)
        np.maximum.at(best, row, score)
        np.add.at(tally, (row, c), np.exp((score - best[row]) / self.temperature))
        total = tally.sum(axis=1, keepdims=True)
        return np.divide(tally, total, out=np.zeros_like(tally), where=total > 0)

    # -- the queue --------------------------------------------------------------------------------

    def queue(self, limit: int = 50, offset: int = 0) -> list[Suggestion]:
        """Unlabelled images in `search.labelling.queue_order`'s order (coverage, then least certain)."""
        if limit < 0 or offset < 0:
            raise ValueError("limit and offset cannot be negative")
        self.refresh()
        page = [int(i) for i in self.queue_ids()[offset : offset + limit]]
        with self.library.Session() as s:
            rows = {r.image_id: r for r in s.scalars(select(SuggestedLabel).where(SuggestedLabel.image_id.in_(page)))}
            evidence = self._evidence(s, page)
        return [
            Suggestion(i, rows[i].label, rows[i].confidence, rows[i].margin, evidence[i]) for i in page if i in rows
        ]

    def queue_ids(self) -> npt.NDArray[np.int64]:
        """Every unlabelled indexed photo's id, best to label first (cached per state of the suggestions)."""
        self.refresh()
        key = (json.dumps(self._state(SUGGESTIONS_STATE), sort_keys=True), json.dumps(self.fingerprint()))
        if self._order is not None and self._order[0] == key:
            return self._order[1]
        with self.library.engine.connect() as conn:  # plain rows: a million ORM rows took seconds
            rows = conn.exec_driver_sql(
                "SELECT s.image_id, s.label, s.margin FROM suggestions s LEFT JOIN labels l "
                "ON l.image_id = s.image_id WHERE l.image_id IS NULL ORDER BY s.image_id").fetchall()
            labelled = np.fromiter((r[0] for r in conn.exec_driver_sql("SELECT image_id FROM labels")),
                                   dtype=np.int64)
            near: dict[int, float] = dict(conn.exec_driver_sql(
                "SELECT n.image_id, max(n.score) FROM labels l JOIN neighbours n ON n.neighbour_id = l.image_id "
                "WHERE n.rank < ? GROUP BY n.image_id", (self.k,)).fetchall())
        names = sorted({r[1] for r in rows if r[1] is not None})
        code = {n: i for i, n in enumerate(names)}
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        order = queue_order(
            ids,
            np.fromiter((-1 if r[1] is None else code[r[1]] for r in rows), dtype=np.int64, count=len(rows)),
            np.fromiter((r[2] for r in rows), dtype=np.float64, count=len(rows)),
            labelled,
            self.clusters(),
            np.fromiter((near.get(r[0], -1.0) for r in rows), dtype=np.float64, count=len(rows)),
        )
        self._order = (key, order)
        return order

    def clusters(self) -> Clusters:
        """The queue's k-means clusters of every indexed photo, kept beside the library
        (CLUSTERS_FILE) and brought up to date by difference: photos added since are assigned to the
        stored centres, removed ones dropped; refitted when the cluster count the size asks for
        changes or most photos are new. A million photos: 30 s to fit, then milliseconds."""
        with self._clusters_lock:
            return self._current_clusters()

    def _current_clusters(self) -> Clusters:
        fingerprint = self.library.vectors_fingerprint()
        if self._clusters is not None and self._clusters[0] == fingerprint:
            return self._clusters[1]
        ids = self.library.indexed_ids()
        stored = load_clusters(self.library.path / CLUSTERS_FILE)
        if stored is not None and stored[0] == fingerprint:
            clusters = stored[2]
        elif (stored is not None and len(stored[1]) == cluster_count(len(ids))
              and np.isin(ids, stored[2].ids).mean() >= REFIT_SHARE):
            centres, old = stored[1], stored[2]
            keep = np.isin(old.ids, ids)
            new = np.setdiff1d(ids, old.ids)
            added = assign(centres, [self.library.stored_vectors(new)] if len(new) else [])
            clusters = merge_clusters(Clusters(old.ids[keep], old.cluster[keep], old.closeness[keep]), added)
            save_clusters(self.library.path / CLUSTERS_FILE, fingerprint, centres, clusters)
        else:  # fitted on a sample, then every vector assigned chunk by chunk: never all in memory
            positions = sample_positions(len(ids))
            _, sample = self.library.stored_vectors(ids[positions] if positions is not None else ids)
            centres = fit_centres(sample, cluster_count(len(ids)))
            clusters = assign(centres, self.library.iter_vectors())
            save_clusters(self.library.path / CLUSTERS_FILE, fingerprint, centres, clusters)
        self._clusters = (fingerprint, clusters)
        return clusters


def save_clusters(path, fingerprint: list[str], centres: npt.NDArray[np.float32], clusters: Clusters) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, fingerprint=np.array(json.dumps(fingerprint)), centres=centres, ids=clusters.ids,
             cluster=clusters.cluster, closeness=clusters.closeness)
    os.replace(tmp, path)


def load_clusters(path) -> tuple[list[str], npt.NDArray[np.float32], Clusters] | None:
    """(fingerprint, centres, clusters) as saved, or None if there is no readable file."""
    try:
        with np.load(path) as f:
            return (json.loads(str(f["fingerprint"])), f["centres"],
                    Clusters(f["ids"], f["cluster"], f["closeness"]))
    except (OSError, KeyError, ValueError):
        return None


def merge_clusters(a: Clusters, b: Clusters) -> Clusters:
    ids = np.concatenate([a.ids, b.ids])
    order = np.argsort(ids, kind="stable")
    return Clusters(ids[order], np.concatenate([a.cluster, b.cluster])[order],
                    np.concatenate([a.closeness, b.closeness])[order])


def summarise(p: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.int64], npt.NDArray, npt.NDArray]:
    """Each row's winning class code (-1 for a row of zeros), its probability, and its margin over the next."""
    if p.shape[1] == 0:
        n = len(p)
        return np.full(n, -1, dtype=np.int64), np.zeros(n), np.zeros(n)
    top2 = -np.sort(-p, axis=1)[:, :2]
    best = top2[:, 0]
    second = top2[:, 1] if p.shape[1] > 1 else np.zeros(len(p))
    winner = np.where(best > 0, p.argmax(axis=1), -1)
    return winner, best, best - second
