"""Weighted k-NN labelling (DINO's eval_knn protocol): each labelled neighbour votes exp(sim / T).

Every indexed image's top-k neighbour list is stored once (table `neighbours`) and rebuilt only
when the vectors change. Votes are stored too (table `suggestions`); a label change re-votes only
the images whose lists contain the relabelled image, so a click costs k rows per dependant,
not a pass over the library.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from indexer.schema import INDEXED, Image, Label, Meta, Neighbour, SuggestedLabel
from search.neighbour_lists import NEIGHBOURS_STATE, NeighbourLists
from search.searcher import Searcher

log = logging.getLogger(__name__)

DEFAULT_K = 20
DEFAULT_TEMPERATURE = 0.07
SUGGESTIONS_STATE = "knn_suggestions"  # meta key: {"k", "temperature", "vectors", "labels"}
_PADDING = -1e30  # FAISS pads missing results with -FLT_MAX


@dataclass(frozen=True)
class Vote:
    label: str | None  # None when no labelled neighbour voted
    confidence: float  # the winner's share of the votes, 0..1
    margin: float  # winner's share minus the runner-up's, 0..1 (0 for a tie)
    tally: dict[str, float] = field(default_factory=dict)  # each label's share, best first


def vote(
    scores: npt.ArrayLike,
    labels: Sequence[str | None],
    temperature: float = DEFAULT_TEMPERATURE,
    *,
    ids: npt.ArrayLike | None = None,
    query_id: int | None = None,
) -> Vote:
    """Weighted vote of neighbours given best first: each labelled one adds exp(score / T).

    Skips unlabelled neighbours (label None), FAISS padding (id -1 or score -FLT_MAX) and, when
    `ids` are given, the query itself. A tie goes to the label of the nearest voter.
    """
    if temperature <= 0:
        raise ValueError("temperature must be positive")
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if len(labels) != len(scores):
        raise ValueError(f"{len(scores)} scores but {len(labels)} labels")
    keep = np.isfinite(scores) & (scores > _PADDING)
    keep &= np.array([label is not None for label in labels], dtype=bool)
    if ids is not None:
        ids = np.asarray(ids).ravel()
        keep &= ids >= 0
        if query_id is not None:
            keep &= ids != query_id
    if not keep.any():
        return Vote(None, 0.0, 0.0, {})
    # exp(s / T) / sum exp(s / T) is unchanged by subtracting the best score; it avoids overflow.
    kept = scores[keep]
    weights = np.exp((kept - kept.max()) / temperature)
    totals: dict[str, float] = defaultdict(float)
    first: dict[str, int] = {}
    voters = [label for label, kept_it in zip(labels, keep, strict=False) if kept_it and label is not None]
    for rank, (label, weight) in enumerate(zip(voters, weights, strict=False)):
        totals[label] += float(weight)
        first.setdefault(label, rank)
    ranked = sorted(totals, key=lambda lab: (-totals[lab], first[lab]))
    total = sum(totals.values())
    tally = {lab: totals[lab] / total for lab in ranked}
    best = tally[ranked[0]]
    runner_up = tally[ranked[1]] if len(ranked) > 1 else 0.0
    return Vote(ranked[0], best, best - runner_up, tally)


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


class Labeller:
    """Suggested labels for a library's images, kept current as labels change.

    Thread-safe. Reads (`suggest`, `queue`) first bring the stored lists and votes up to date:
    neighbour lists are rebuilt when the indexed vectors changed, every vote is redone when the
    labels changed behind its back (another process imported some); `on_label_changed` re-votes
    only the images that have the relabelled image among their k neighbours.
    """

    def __init__(
        self, searcher: Searcher, k: int = DEFAULT_K, temperature: float = DEFAULT_TEMPERATURE
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

    # -- public -----------------------------------------------------------------------------------

    def suggest(self, image_id: int) -> Suggestion | None:
        """The vote for one indexed image (labelled or not); None for an unknown or unindexed id."""
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
        """Re-vote the images that have `image_id` among their k neighbours (call after commit)."""
        with self._lock:
            state = self._state(NEIGHBOURS_STATE)
            wanted = self._suggestions_state(labels=None)
            have = self._state(SUGGESTIONS_STATE)
            if state.get("k", 0) < self.k or {**have, "labels": None} != wanted:
                return  # stale anyway: the next read rebuilds everything
            with self.library.Session() as s:
                dependants = s.scalars(
                    select(Neighbour.image_id)
                    .where(Neighbour.neighbour_id == int(image_id), Neighbour.rank < self.k)
                    .distinct()
                ).all()
            self._revote(dependants)
            self._save_state(SUGGESTIONS_STATE, self._suggestions_state())
            log.info("label of %s changed: re-voted %d images", image_id, len(dependants))

    def queue(self, limit: int = 50, offset: int = 0) -> list[Suggestion]:
        """Unlabelled images for a person to label, least certain first.

        Ordered by margin (winner's share minus runner-up's), lowest first; images no labelled
        neighbour voted for (label None) come after every image that has a suggestion.
        """
        if limit < 0 or offset < 0:
            raise ValueError("limit and offset cannot be negative")
        self.refresh()
        with self.library.Session() as s:
            rows = s.scalars(
                select(SuggestedLabel)
                .outerjoin(Label, Label.image_id == SuggestedLabel.image_id)
                .where(Label.image_id.is_(None))
                .order_by(
                    SuggestedLabel.label.is_(None), SuggestedLabel.margin, SuggestedLabel.image_id
                )
                .limit(limit)
                .offset(offset)
            ).all()
            evidence = self._evidence(s, [r.image_id for r in rows])
        return [
            Suggestion(r.image_id, r.label, r.confidence, r.margin, evidence[r.image_id])
            for r in rows
        ]

    def refresh(self, *, force: bool = False, progress: bool = False) -> bool:
        """Bring neighbour lists and votes up to date; True if anything was recomputed.

        Lists follow the loaded index (by difference after an indexer run); votes are redone for the
        images whose lists changed when they were current before, else for every image.
        """
        with self._lock, self.library.derived_lock():  # threads here, processes (web, indexer) there
            self.searcher.reload()
            lists = self.neighbours.update(force=force, progress=progress)
            rebuilt = lists.mode in ("full", "incremental")
            wanted = self._suggestions_state()
            have = self._state(SUGGESTIONS_STATE)
            if rebuilt or have != wanted:
                if lists.touched is not None and have == {**wanted, "vectors": lists.previous}:
                    self._revote(lists.touched)
                else:
                    self._revote(None)
                self._save_state(SUGGESTIONS_STATE, wanted)
                rebuilt = True
            return rebuilt

    # -- state ------------------------------------------------------------------------------------

    def _labels_fingerprint(self) -> list[str]:
        from search.labelling.labels import labels_fingerprint

        return labels_fingerprint(self.library)

    def _state(self, key: str) -> dict:
        with self.library.Session() as s:
            row = s.get(Meta, key)
        return json.loads(row.value) if row else {}

    def _save_state(self, key: str, value: dict) -> None:
        with self.library.Session.begin() as s:
            s.merge(Meta(key=key, value=json.dumps(value)))

    def _suggestions_state(self, labels: object = ...) -> dict:
        return {
            "k": self.k,
            "temperature": self.temperature,
            "vectors": self.neighbours.state().get("vectors"),  # votes follow the stored lists
            "labels": self._labels_fingerprint() if labels is ... else labels,
        }

    # -- work -------------------------------------------------------------------------------------

    def _revote(self, image_ids: Sequence[int] | None) -> None:
        """Recompute and store the votes of these images (all indexed images if None)."""
        if image_ids is None:  # in chunks: never every list of a large library in memory at once
            with self.library.Session.begin() as s:
                s.execute(delete(SuggestedLabel))
                everyone = s.scalars(select(Image.id).where(Image.status == INDEXED)).all()
            for start in range(0, len(everyone), 20_000):
                self._revote(everyone[start : start + 20_000])
            return
        with self.library.Session() as s:
            labels = dict(s.execute(select(Label.image_id, Label.label)).all())
            query = (
                select(Neighbour.image_id, Neighbour.neighbour_id, Neighbour.score)
                .where(Neighbour.rank < self.k)
                .order_by(Neighbour.image_id, Neighbour.rank)
            )
            lists: dict[int, list[tuple[int, float]]] = defaultdict(list)
            if image_ids is None:
                targets = s.scalars(select(Image.id).where(Image.status == INDEXED)).all()
                parts = [query]
            else:
                targets = [int(i) for i in image_ids]
                parts = [
                    query.where(Neighbour.image_id.in_(targets[i : i + 500]))
                    for i in range(0, len(targets), 500)
                ]
            for part in parts:
                for image_id, neighbour_id, score in s.execute(part):
                    lists[image_id].append((neighbour_id, score))
        rows = []
        for image_id in targets:
            neighbours = lists.get(image_id, [])
            v = vote(
                [sc for _, sc in neighbours],
                [labels.get(n) for n, _ in neighbours],
                self.temperature,
            )
            rows.append(
                {
                    "image_id": image_id,
                    "label": v.label,
                    "confidence": v.confidence,
                    "margin": v.margin,
                }
            )
        with self.library.Session.begin() as s:
            if image_ids is None:
                s.execute(delete(SuggestedLabel))
            else:
                for i in range(0, len(targets), 500):
                    s.execute(
                        delete(SuggestedLabel).where(
                            SuggestedLabel.image_id.in_(targets[i : i + 500])
                        )
                    )
            for start in range(0, len(rows), 20_000):
                s.execute(insert(SuggestedLabel), rows[start : start + 20_000])

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
