"""A labeller that learns: the head trained on the library's labels, stored beside it, behind every suggestion.

`LearningLabeller` is a `Labeller` whose full refresh writes the chosen head's calibrated
predictions into the stored suggestions, and whose queue follows `search.queue_order`. A label
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

from indexer.schema import INDEXED, Image, Label, Neighbour, SuggestedLabel
from search.calibration import with_temperature
from search.head import KNN, PROBE, PROJECTION, Head, Probe, projected_knn, train_head
from search.head import blend as blend_probabilities
from search.knn import DEFAULT_K, DEFAULT_TEMPERATURE, SUGGESTIONS_STATE, Labeller, Suggestion
from search.labels import labels_fingerprint
from search.queue_order import Clusters, kmeans, queue_order
from search.retraining import Debouncer
from search.searcher import Searcher

log = logging.getLogger(__name__)

HEAD_FILE = "head.npz"  # beside the library's SQLite file
HEAD_FORMAT = 1
RETRAIN_DELAY = 0.5  # seconds of quiet after the last label change before the web retrains


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
    tmp = path.with_name(path.name + ".tmp.npz")
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
        self._order: tuple[object, npt.NDArray[np.int64]] | None = None
        self._train_lock = threading.Lock()  # one training at a time
        self.trainer = Debouncer(self.retrain, retrain_delay) if background else None

    # -- the head ---------------------------------------------------------------------------------

    def fingerprint(self) -> dict:
        """What the head is trained on: the labels, the vectors and the vote's settings."""
        return {
            "labels": labels_fingerprint(self.library),
            "vectors": self.library.vectors_fingerprint(),
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
                rows = self._rows(head) if ready else None
                with self._lock:
                    save_head(self.head_path, head, fingerprint)
                    if rows is not None:
                        self._write(rows)
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
        self._write(self._rows(self.head()))

    def _rows(self, head: Head | None) -> list[dict]:
        ids, labels, confidence, margin = self.predict_all(head)
        log.info("suggestions of %d images from %s", len(ids), head.method if head else KNN)
        return [
            {"image_id": int(i), "label": lab, "confidence": float(c), "margin": float(m)}
            for i, lab, c, m in zip(ids, labels, confidence, margin, strict=True)
        ]

    def _write(self, rows: list[dict]) -> None:
        with self.library.Session.begin() as s:
            s.execute(delete(SuggestedLabel))
            for start in range(0, len(rows), 20_000):
                s.execute(insert(SuggestedLabel), rows[start : start + 20_000])

    # -- predictions ------------------------------------------------------------------------------

    def predict_all(
        self, head: Head | None = None
    ) -> tuple[npt.NDArray[np.int64], list[str | None], npt.NDArray, npt.NDArray]:
        """(ids, label, calibrated confidence, margin) of every indexed photo, by `head` (the stored one)."""
        head = head or self.head()
        with self.library.Session() as s:
            labels = dict(s.execute(select(Label.image_id, Label.label)).all())
            targets = np.fromiter(
                s.scalars(select(Image.id).where(Image.status == INDEXED).order_by(Image.id)), dtype=np.int64
            )
            raw = s.connection().exec_driver_sql(
                "SELECT image_id, neighbour_id, score FROM neighbours WHERE rank < ?", (self.k,)
            ).fetchall()
        classes = sorted(set(labels.values()) | set(head.classes if head else ()))
        code = {c: i for i, c in enumerate(classes)}
        tally = self._tally(targets, raw, labels, code)
        if head is None or head.method == KNN:
            p = tally
        else:
            _, vectors = self.library.stored_vectors()  # ordered by id, as targets
            into = np.array([code[c] for c in head.classes])
            if head.method == PROJECTION:
                lab_ids = np.array(sorted(i for i in labels if labels[i] in code), dtype=np.int64)
                pos = np.searchsorted(targets, lab_ids)
                ok = (pos < len(targets)) & (targets[np.minimum(pos, len(targets) - 1)] == lab_ids)
                lab_codes = np.array([code[labels[int(i)]] for i in lab_ids[ok]], dtype=np.int64)
                p = projected_knn(
                    vectors, vectors[pos[ok]], lab_codes, head.projection, len(classes), head.k, head.knn_temperature
                )
            else:
                p = np.zeros((len(targets), len(classes)))
                p[:, into] = head.probe.probabilities(vectors)  # type: ignore[union-attr]
                if head.method != PROBE:
                    p = blend_probabilities(p, tally, head.blend_weight)
        p = with_temperature(p, head.temperature if head else 1.0)
        return (targets, *summarise(p, classes))

    def _tally(self, targets, raw, labels: dict[int, str], code: dict[str, int]) -> npt.NDArray[np.float64]:
        """Each target's k-NN vote shares [N, C] from the stored neighbour lists."""
        tally = np.zeros((len(targets), len(code)))
        if not raw or not labels or not len(targets):
            return tally
        arr = np.array(raw, dtype=np.float64)
        img, nb, score = arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64), arr[:, 2]
        top = int(max(img.max(), nb.max(), targets.max(), max(labels))) + 1
        code_of = np.full(top, -1, dtype=np.int64)
        for image_id, label in labels.items():
            code_of[image_id] = code[label]
        row_of = np.full(top, -1, dtype=np.int64)
        row_of[targets] = np.arange(len(targets))
        c, row = code_of[nb], row_of[img]
        keep = (c >= 0) & (row >= 0)
        c, row, score = c[keep], row[keep], score[keep]
        best = np.full(len(targets), -np.inf)
        np.maximum.at(best, row, score)
        np.add.at(tally, (row, c), np.exp((score - best[row]) / self.temperature))
        total = tally.sum(axis=1, keepdims=True)
        return np.divide(tally, total, out=np.zeros_like(tally), where=total > 0)

    # -- the queue --------------------------------------------------------------------------------

    def queue(self, limit: int = 50, offset: int = 0) -> list[Suggestion]:
        """Unlabelled images in `search.queue_order`'s order (coverage, then least certain)."""
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
        with self.library.Session() as s:
            rows = s.execute(
                select(SuggestedLabel.image_id, SuggestedLabel.label, SuggestedLabel.margin)
                .outerjoin(Label, Label.image_id == SuggestedLabel.image_id)
                .where(Label.image_id.is_(None))
                .order_by(SuggestedLabel.image_id)
            ).all()
            labelled = np.fromiter(s.scalars(select(Label.image_id)), dtype=np.int64)
            near = dict(
                s.execute(
                    select(Neighbour.image_id, func.max(Neighbour.score))
                    .join(Label, Label.image_id == Neighbour.neighbour_id)
                    .where(Neighbour.rank < self.k)
                    .group_by(Neighbour.image_id)
                ).all()
            )
        names = sorted({r[1] for r in rows if r[1] is not None})
        code = {n: i for i, n in enumerate(names)}
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        order = queue_order(
            ids,
            np.array([code.get(r[1], -1) if r[1] is not None else -1 for r in rows], dtype=np.int64),
            np.array([r[2] for r in rows], dtype=np.float64),
            labelled,
            self.clusters(),
            np.array([near.get(int(i), -1.0) for i in ids]),
        )
        self._order = (key, order)
        return order

    def clusters(self) -> Clusters:
        fingerprint = self.library.vectors_fingerprint()
        if self._clusters is None or self._clusters[0] != fingerprint:
            ids, vectors = self.library.stored_vectors()
            self._clusters = (fingerprint, kmeans(ids, vectors))
        return self._clusters[1]


def summarise(p: npt.NDArray[np.float64], classes: list[str]) -> tuple[list[str | None], npt.NDArray, npt.NDArray]:
    """Each row's winning class (None for a row of zeros), its probability, and its margin over the next."""
    if p.shape[1] == 0:
        n = len(p)
        return [None] * n, np.zeros(n), np.zeros(n)
    top2 = -np.sort(-p, axis=1)[:, :2]
    best = top2[:, 0]
    second = top2[:, 1] if p.shape[1] > 1 else np.zeros(len(p))
    winner = p.argmax(axis=1)
    labels = [classes[w] if b > 0 else None for w, b in zip(winner, best, strict=True)]
    return labels, best, best - second

