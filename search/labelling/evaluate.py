"""How well the library's labels are predicted by their neighbours: leave-one-out weighted k-NN.

Protocol of DINO's eval_knn.py (`knn_classifier`): unit vectors, exact top-k by cosine among the
other labelled images, each neighbour votes exp(sim / T). Taken as a formula, not a loop: any
number of queries and classes works (DINO's chunking breaks under 100 queries, its top-5 under
5 classes). Retrieval is scored on the same ranking: precision@10 and mean average precision.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from sqlalchemy import select

from indexer.library import Library
from indexer.schema import Label
from search.labelling.calibration import threshold_for
from search.labelling.vote import DEFAULT_K, DEFAULT_TEMPERATURE, vote

# Full-ranking mAP sorts every row; beyond this many labelled images it is cut at MAP_CUTOFF.
FULL_RANKING_MAX = 20_000
MAP_CUTOFF = 1000
REPORTED_PRECISIONS = (0.9, 0.95, 0.99)
_CHUNK = 512


class EvalError(ValueError):
    """A library that cannot be evaluated (too few labelled images)."""


@dataclass
class EvalReport:
    k: int
    temperature: float
    images: int
    class_names: list[str]
    top1: float
    top5: float
    precision_at_10: float
    mean_ap: float
    map_cutoff: int | None  # None: average precision over the full ranking
    per_class: dict[str, dict[str, float]]  # label -> precision, recall, support
    confusion: dict[str, dict[str, int]]  # true label -> predicted label -> count (non-zero only)
    confidences: npt.NDArray[np.float64] = field(repr=False)  # each prediction's vote share
    correct: npt.NDArray[np.bool_] = field(repr=False)

    @property
    def classes(self) -> int:
        return len(self.class_names)

    def threshold_for(self, precision: float) -> float | None:
        """The lowest confidence t at which predictions with confidence >= t are `precision` right.

        None if no threshold reaches it. Ties in confidence are kept together.
        """
        return threshold_for(self.confidences, self.correct, precision)

    def coverage_at(self, threshold: float) -> float:
        """Share of images whose suggestion's confidence is at least `threshold`."""
        return float(np.mean(self.confidences >= threshold)) if len(self.confidences) else 0.0

    def precision_at(self, threshold: float) -> float | None:
        kept = self.confidences >= threshold
        return float(np.mean(self.correct[kept])) if kept.any() else None

    def to_dict(self) -> dict:
        thresholds = {}
        for p in REPORTED_PRECISIONS:
            t = self.threshold_for(p)
            reached = None if t is None else self.precision_at(t)  # not None: t is a confidence seen
            thresholds[str(p)] = {
                "threshold": None if t is None else round(t, 4),
                "coverage": None if t is None else round(self.coverage_at(t), 4),
                "precision": None if reached is None else round(reached, 4),
            }
        return {
            "images": self.images,
            "classes": self.classes,
            "k": self.k,
            "temperature": self.temperature,
            "top1": round(self.top1, 4),
            "top5": round(self.top5, 4),
            "precision_at_10": round(self.precision_at_10, 4),
            "mean_ap": round(self.mean_ap, 4),
            "map_cutoff": self.map_cutoff,
            "confidence_thresholds": thresholds,
            "per_class": {
                c: {
                    key: round(value, 4) if isinstance(value, float) else value
                    for key, value in stats.items()
                }
                for c, stats in self.per_class.items()
            },
            "confusion": self.confusion,
        }


def evaluate(
    library: Library,
    k: int = DEFAULT_K,
    temperature: float = DEFAULT_TEMPERATURE,
    *,
    labels: dict[int, str] | None = None,
) -> EvalReport:
    """Leave-one-out weighted k-NN over the labelled, indexed images (or over `labels` given).

    Neighbours are exact (brute force over the labelled vectors), whatever the library's index.
    Raises EvalError with fewer than two labelled images.
    """
    if k < 1:
        raise ValueError("k must be at least 1")
    if temperature <= 0:
        raise ValueError("temperature must be positive")
    if labels is None:
        with library.Session() as s:
            labels = dict(s.execute(select(Label.image_id, Label.label)).all())
    ids, vectors = (
        library.stored_vectors(sorted(labels)) if labels else (np.zeros(0, np.int64), np.zeros((0, 0), np.float32))
    )
    if len(ids) < 2:
        raise EvalError(f"{len(ids)} labelled images have vectors: label at least two to evaluate")
    truth = [labels[int(i)] for i in ids]
    return evaluate_vectors(vectors, truth, k, temperature)


def evaluate_vectors(
    vectors: npt.NDArray[np.float32],
    truth: list[str],
    k: int = DEFAULT_K,
    temperature: float = DEFAULT_TEMPERATURE,
) -> EvalReport:
    """The leave-one-out report for unit vectors [N, D] and their labels."""
    n = len(truth)
    class_names = sorted(set(truth))
    code = {c: i for i, c in enumerate(class_names)}
    y = np.array([code[t] for t in truth])
    full = n <= FULL_RANKING_MAX
    depth = n - 1 if full else min(n - 1, max(MAP_CUTOFF, k, 10))
    kk = min(k, n - 1)
    predicted: list[str | None] = []
    confidences = np.zeros(n)
    top5_hits = 0
    p10 = np.zeros(n)
    ap: list[float] = []
    class_size = np.bincount(y, minlength=len(class_names))
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        sims = vectors[start:stop] @ vectors.T
        sims[np.arange(stop - start), np.arange(start, stop)] = -np.inf  # leave itself out
        if full:
            order = np.argsort(-sims, axis=1, kind="stable")[:, :depth]
        else:
            part = np.argpartition(-sims, depth, axis=1)[:, :depth]
            order = np.take_along_axis(
                part, np.argsort(-np.take_along_axis(sims, part, 1), axis=1, kind="stable"), 1
            )
        for row, q in enumerate(range(start, stop)):
            ranked = order[row]
            v = vote(sims[row, ranked[:kk]], [truth[j] for j in ranked[:kk]], temperature)
            predicted.append(v.label)
            confidences[q] = v.confidence
            top5_hits += truth[q] in list(v.tally)[:5]
            relevant = y[ranked] == y[q]
            p10[q] = relevant[:10].mean()
            n_relevant = class_size[y[q]] - 1
            if n_relevant:
                hits = np.flatnonzero(relevant)
                precision_at_hits = np.arange(1, len(hits) + 1) / (hits + 1)
                ap.append(precision_at_hits.sum() / min(n_relevant, depth))
    correct = np.array([p == t for p, t in zip(predicted, truth, strict=False)])
    per_class: dict[str, dict[str, float]] = {}
    confusion: dict[str, dict[str, int]] = {c: {} for c in class_names}
    for t, p in zip(truth, predicted, strict=False):
        key = p if p is not None else "(none)"
        confusion[t][key] = confusion[t].get(key, 0) + 1
    for c in class_names:
        tp = confusion[c].get(c, 0)
        predicted_as = sum(row.get(c, 0) for row in confusion.values())
        support = int(class_size[code[c]])
        per_class[c] = {
            "precision": tp / predicted_as if predicted_as else 0.0,
            "recall": tp / support,
            "support": support,
        }
    return EvalReport(
        k=k,
        temperature=temperature,
        images=n,
        class_names=class_names,
        top1=float(correct.mean()),
        top5=top5_hits / n,
        precision_at_10=float(p10.mean()),
        mean_ap=float(np.mean(ap)) if ap else 0.0,
        map_cutoff=None if full else depth,
        per_class=per_class,
        confusion=confusion,
        confidences=confidences,
        correct=correct,
    )
