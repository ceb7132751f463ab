"""The labeller: every indexed photo's suggested label, kept current as labels and photos change.

One `Labeller` holds its method, the stored `Head` (the k-NN vote until cross-validation finds a
learned method that measures better), and asks it for probabilities. Every indexed image's top-k
neighbour list is stored once (table `neighbours`) and rebuilt only when the vectors change;
suggestions are stored too (table `suggestions`). A label click re-votes by k-NN only the images
whose lists contain the relabelled image (k rows per dependant, not a pass over the library); the
head is then retrained and every suggestion refreshed, in a background thread when `background`
is set (the web app), at once otherwise. The labelling queue follows `queue_order`.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from indexer.library import DerivedBusy, FileCache
from indexer.schema import INDEXED, Image, Label, Neighbour, SuggestedLabel
from search.labelling import spreading
from search.labelling.calibration import with_temperature
from search.labelling.debouncer import Debouncer
from search.labelling.head_store import HEAD_FILE, load_head, save_head
from search.labelling.labels import labels_fingerprint
from search.labelling.learned_head import GRAPH_METHODS, KNN, PROJECTION, SPREAD, Head, train_head
from search.labelling.queue_clusters import current_clusters
from search.labelling.queue_order import Clusters, queue_order
from search.labelling.spreading import ALPHA, Graph, load_graph, spread
from search.labelling.vote import DEFAULT_K, DEFAULT_TEMPERATURE, vote, vote_shares
from search.neighbour_lists import NEIGHBOURS_STATE, NeighbourLists
from search.searcher import Searcher

log = logging.getLogger(__name__)

SUGGESTIONS_STATE = "knn_suggestions"  # meta key: {"k", "temperature", "vectors", "labels", "head"}
PREDICT_CHUNK = 20_000  # photos predicted (lists and vectors read) at a time
RETRAIN_DELAY = 0.5  # seconds of quiet after the last label change before the web retrains


@dataclass(frozen=True)
class Evidence:
    image_id: int
    score: float
    label: str | None  # None: the neighbour is unlabelled and did not vote


@dataclass(frozen=True)
class Suggestion:
    image_id: int
    label: str | None
    confidence: float
    margin: float
    evidence: list[Evidence]  # the image's k neighbours, nearest first


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


class Labeller:
    """Suggested labels for a library's images, and the queue of images to label next.

    Thread-safe. Reads (`suggest`, `queue`) first bring the stored lists and suggestions up to date:
    neighbour lists are rebuilt when the indexed vectors changed, every suggestion is redone when
    the labels or the head changed behind its back (another process imported some labels);
    `on_label_changed` re-votes only the images that have the relabelled image among their k
    neighbours.
    """

    def __init__(
        self,
        searcher: Searcher,
        k: int = DEFAULT_K,
        temperature: float = DEFAULT_TEMPERATURE,
        *,
        background: bool = False,
        retrain_delay: float = RETRAIN_DELAY,
    ):
        if k < 1:
            raise ValueError("k must be at least 1")
        if temperature <= 0:
            raise ValueError("temperature must be positive")
        self.searcher = searcher
        self.library = searcher.library
        self.k = int(k)
        self.temperature = float(temperature)
        self._lock = threading.RLock()
        # K = max(k, 20) entries per list, so a later default-k reader can share them.
        self.neighbours = NeighbourLists(searcher, max(self.k, DEFAULT_K))
        self.head_path = self.library.path / HEAD_FILE
        self._head_file = FileCache(self.head_path, load_head)
        self._clusters: tuple[list[str], Clusters] | None = None
        self._clusters_lock = threading.Lock()  # one fit at a time; requests wait for it
        self._order: tuple[object, npt.NDArray[np.int64]] | None = None
        self._train_lock = threading.Lock()  # one training at a time
        self.trainer = Debouncer(self.retrain, retrain_delay) if background else None

    # -- suggestions ------------------------------------------------------------------------------

    def suggest(self, image_id: int) -> Suggestion | None:
        """The suggestion for one indexed image (labelled or not); None for an unknown or unindexed id."""
        self.refresh()
        with self.library.Session() as s:
            row = s.get(SuggestedLabel, int(image_id))
            if row is None:
                return None
            evidence = self._evidence(s, [row.image_id])
        return Suggestion(
            row.image_id, row.label, row.confidence, row.margin, evidence[row.image_id]
        )

    def on_label_changed(self, image_id: int) -> None:
        """Re-vote the images that have `image_id` among their k neighbours (call after commit);
        then, with a background trainer, retrain the head once labels stop changing.

        Never waits on a refresh in progress (a label write must not): the refresh then redoes
        every vote, since the labels no longer match those it started from."""
        if not self._lock.acquire(blocking=False):
            log.info("label of %s changed during a refresh: its votes are redone after it", image_id)
            if self.trainer is not None:
                self.trainer.request()
            return
        try:
            state = self.library.state(NEIGHBOURS_STATE)
            wanted = self._suggestions_state(labels=None)
            have = self.library.state(SUGGESTIONS_STATE)
            if state.get("k", 0) >= self.k and {**have, "labels": None} == wanted:
                with self.library.Session() as s:
                    dependants = s.scalars(
                        select(Neighbour.image_id)
                        .where(Neighbour.neighbour_id == int(image_id), Neighbour.rank < self.k)
                        .distinct()
                    ).all()
                self._revote(dependants)
                self.library.save_state(SUGGESTIONS_STATE, self._suggestions_state())
                log.info("label of %s changed: re-voted %d images", image_id, len(dependants))
            # else stale anyway: the next read rebuilds everything
        finally:
            self._lock.release()
        if self.trainer is not None:
            self.trainer.request()

    def refresh(self, *, force: bool = False, progress: bool = False, wait: bool | None = None) -> bool:
        """Bring neighbour lists and suggestions up to date; True if anything was recomputed.

        Lists follow the loaded index (by difference after an indexer run); the k-NN votes of the
        images whose lists changed are redone when the suggestions were current before, else every
        suggestion is predicted again by the stored head. A read-only library serves what it
        has stored: nothing can be written, not even the lock file.

        While another thread or process is bringing them current (an indexer finishing its run), a
        server's labeller (one with a background trainer) does not wait unless `wait=True` says so:
        it returns False and the request reads what is stored. A labeller without one waits.
        """
        if self.library.read_only:
            return False
        wait = self.trainer is None if wait is None else wait
        try:
            # The file lock first (threads and processes), then the thread lock: a thread waiting for
            # another process never holds `_lock`, which label writes take (`on_label_changed`).
            with self.library.derived_lock(wait=wait), self._lock:
                changed = self._bring_current(force, progress)
        except DerivedBusy:
            log.info("the neighbour lists are being brought current elsewhere: serving the stored ones")
            changed = False
        if self.trainer is not None and self.is_stale():
            self.trainer.request()
        return changed

    def _bring_current(self, force: bool, progress: bool) -> bool:
        """`refresh`'s work, under both locks."""
        self.searcher.reload()
        lists = self.neighbours.update(force=force, progress=progress)
        changed = lists.mode in ("full", "incremental")
        wanted = self._suggestions_state()
        have = self.library.state(SUGGESTIONS_STATE)
        if changed or have != wanted:
            if lists.touched is not None and have == {**wanted, "vectors": lists.previous}:
                self._revote(lists.touched)
            else:
                self._write(self.predict_all())
            self.library.save_state(SUGGESTIONS_STATE, wanted)
            changed = True
        return changed

    def _suggestions_state(self, labels: object = ...) -> dict:
        stored = self.stored()
        return {
            "k": self.k,
            "temperature": self.temperature,
            "vectors": self.neighbours.state().get("vectors"),  # suggestions follow the stored lists
            "labels": labels_fingerprint(self.library) if labels is ... else labels,
            "head": stored[1]["token"] if stored else None,
        }

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
        return self._head_file.get()

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
                self.searcher.reload()
                if not self.neighbours.current(self.k):
                    self.refresh(wait=True)  # label spreading runs over the stored lists: build them first
                data = labelled_set(self.library)
                graph = self.graph()
                head = train_head(data.vectors, data.labels, self.k, self.temperature, graph=graph,
                                  nodes=graph.nodes(data.ids) if graph is not None else None)
                # Predict outside the lock (the slow part: requests keep reading the old suggestions),
                # then swap the head and its suggestions in together.
                self.searcher.reload()
                ready = self.neighbours.current(self.k)
                predictions = self.predict_all(head) if ready else None
                with self._lock:
                    save_head(self.head_path, head, fingerprint)
                    if predictions is not None:
                        self._write(predictions)
                        self.library.save_state(SUGGESTIONS_STATE, self._suggestions_state())
            self.refresh(wait=True)  # nothing to do unless the neighbour lists were stale
            return self.head()  # type: ignore[return-value]

    def graph(self) -> Graph | None:
        """The stored lists as label spreading's graph (None while they are not current, or when the
        library is too small for spreading to help)."""
        self.searcher.reload()
        if not self.neighbours.current(self.k) or self.library.counts()["indexed"] < spreading.SPREAD_MIN_PHOTOS:
            return None
        graph = load_graph(self.library, self.k)
        return graph if spreading.worth_spreading(graph) else None

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

    # -- predictions ------------------------------------------------------------------------------

    def predict_all(self, head: Head | None = None) -> Predictions:
        """Every indexed photo's label, calibrated confidence and margin by `head` (the stored one;
        the k-NN vote when none is).

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
        columns = np.array([code[c] for c in head.classes] if head else [], dtype=np.int64)
        graph, spread_all = None, None
        if method in GRAPH_METHODS:  # one spreading from every label over the whole graph
            graph = load_graph(self.library, self.k)
            if graph is not None:
                seeds = np.array(sorted(labels), dtype=np.int64)
                spread_all = spread(graph, graph.nodes(seeds), code_of[seeds], len(classes),
                                    alpha=head.spread_alpha if head else ALPHA)
        parts = []
        for ids, vectors in self._targets(with_vectors=method not in (KNN, SPREAD)):
            tally = self._tally(ids, code_of, len(classes))
            spread_rows = None
            if graph is not None and spread_all is not None:
                at = graph.nodes(ids)
                spread_rows = np.where((at >= 0)[:, None], spread_all[np.maximum(at, 0)], 0.0)
            elif method == SPREAD:  # no current lists to spread over: their k-NN votes stand in
                spread_rows = tally
            p = (head.predict(vectors, tally, columns, len(classes), lab_vectors, code_of[lab_ids], spread_rows)
                 if head else tally)
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
        if not len(targets) or not n_classes:
            return np.zeros((len(targets), n_classes))
        with self.library.engine.connect() as conn:
            raw = conn.exec_driver_sql(
                "SELECT image_id, neighbour_id, score FROM neighbours "
                "WHERE image_id BETWEEN ? AND ? AND rank < ?", (int(targets[0]), int(targets[-1]), self.k)
            ).fetchall()
        if not raw:
            return np.zeros((len(targets), n_classes))
        arr = np.array(raw, dtype=np.float64)
        img, nb, score = arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64), arr[:, 2]
        c = np.where(nb < len(code_of), code_of[np.minimum(nb, len(code_of) - 1)], -1)
        row = np.searchsorted(targets, img)
        keep = (c >= 0) & (row < len(targets))
        keep[keep] &= targets[row[keep]] == img[keep]
        return vote_shares(row[keep], c[keep], score[keep], len(targets), n_classes, self.temperature)

    def _revote(self, image_ids: Sequence[int]) -> None:
        """Recompute and store the k-NN votes of these images (a label click's dependants)."""
        targets = [int(i) for i in image_ids]
        with self.library.Session() as s:
            labels = dict(s.execute(select(Label.image_id, Label.label)).all())
            query = (
                select(Neighbour.image_id, Neighbour.neighbour_id, Neighbour.score)
                .where(Neighbour.rank < self.k)
                .order_by(Neighbour.image_id, Neighbour.rank)
            )
            lists: dict[int, list[tuple[int, float]]] = defaultdict(list)
            for start in range(0, len(targets), 500):
                part = query.where(Neighbour.image_id.in_(targets[start : start + 500]))
                for image_id, neighbour_id, score in s.execute(part):
                    lists[image_id].append((neighbour_id, score))
        rows = []
        for image_id in targets:
            neighbours = lists.get(image_id, [])
            v = vote([sc for _, sc in neighbours], [labels.get(n) for n, _ in neighbours], self.temperature)
            rows.append({"image_id": image_id, "label": v.label, "confidence": v.confidence, "margin": v.margin})
        with self.library.Session.begin() as s:
            for start in range(0, len(targets), 500):
                s.execute(delete(SuggestedLabel).where(SuggestedLabel.image_id.in_(targets[start : start + 500])))
            for start in range(0, len(rows), 20_000):
                s.execute(insert(SuggestedLabel), rows[start : start + 20_000])

    def _write(self, predictions: Predictions) -> None:
        with self.library.Session.begin() as s:
            s.execute(delete(SuggestedLabel))
            for start in range(0, len(predictions.ids), PREDICT_CHUNK):
                s.execute(insert(SuggestedLabel), predictions.rows(start, start + PREDICT_CHUNK))

    def evidence(self, image_ids: Sequence[int]) -> dict[int, list[Evidence]]:
        """Each image's k stored neighbours, nearest first, with their labels (lists as they are stored)."""
        ids = [int(i) for i in image_ids]
        out: dict[int, list[Evidence]] = {}
        with self.library.Session() as s:
            for start in range(0, len(ids), 500):
                out.update(self._evidence(s, ids[start : start + 500]))
        return out

    def _evidence(self, s: Session, image_ids: list[int]) -> dict[int, list[Evidence]]:
        out: dict[int, list[Evidence]] = {i: [] for i in image_ids}
        if not image_ids:
            return out
        rows = s.execute(
            select(Neighbour.image_id, Neighbour.neighbour_id, Neighbour.score, Label.label)
            .outerjoin(Label, Label.image_id == Neighbour.neighbour_id)
            .where(Neighbour.image_id.in_(image_ids), Neighbour.rank < self.k)
            .order_by(Neighbour.image_id, Neighbour.rank)
        )
        for image_id, neighbour_id, score, label in rows:
            out[image_id].append(Evidence(neighbour_id, score, label))
        return out

    # -- the queue --------------------------------------------------------------------------------

    def queue(self, limit: int = 50, offset: int = 0) -> list[Suggestion]:
        """Unlabelled images in `queue_order`'s order (coverage, then least certain)."""
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
        key = (json.dumps(self.library.state(SUGGESTIONS_STATE), sort_keys=True), json.dumps(self.fingerprint()))
        if self._order is not None and self._order[0] == key:
            return self._order[1]
        with self.library.engine.connect() as conn:  # plain rows: a million ORM rows took seconds
            rows = conn.exec_driver_sql(
                "SELECT s.image_id, s.margin FROM suggestions s LEFT JOIN labels l "
                "ON l.image_id = s.image_id WHERE l.image_id IS NULL ORDER BY s.image_id").fetchall()
            labelled = np.fromiter((r[0] for r in conn.exec_driver_sql("SELECT image_id FROM labels")),
                                   dtype=np.int64)
            near: dict[int, float] = dict(conn.exec_driver_sql(
                "SELECT n.image_id, max(n.score) FROM labels l JOIN neighbours n ON n.neighbour_id = l.image_id "
                "WHERE n.rank < ? GROUP BY n.image_id", (self.k,)).fetchall())
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        order = queue_order(
            ids,
            np.fromiter((r[1] for r in rows), dtype=np.float64, count=len(rows)),
            labelled,
            self.clusters(),
            np.fromiter((near.get(r[0], -1.0) for r in rows), dtype=np.float64, count=len(rows)),
        )
        self._order = (key, order)
        return order

    def clusters(self) -> Clusters:
        """The queue's k-means clusters of every indexed photo (`queue_clusters.current_clusters`)."""
        with self._clusters_lock:
            self._clusters = current_clusters(self.library, self._clusters)
            return self._clusters[1]


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
