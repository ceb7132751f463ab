"""Labels that look wrong: confident learning (Northcutt et al., as in cleanlab) on out-of-fold predictions.

Every labelled photo gets out-of-fold class probabilities from `learned_head.cross_validate` (the
method that measures best). Class j's threshold is the mean probability of j among the photos
labelled j; a photo is suspicious when another class reaches its own threshold and beats the given
label. A class's threshold is at most MAJORITY: an out-of-fold probability over one half for another
class is a confident disagreement even for a class learned so well that its mean is higher (a shoe
labelled "dress" at p(shoes) = 0.93 when shoes average 0.96). The list is ranked by margin,
p(suggested) - p(given), worst first. Everything uses the raw
out-of-fold probabilities, as cleanlab does: a calibration temperature fitted on the (noisy) labels
softened them and moved true mistakes under their thresholds. Each entry carries its nearest
labelled neighbours from the stored lists as evidence.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from indexer.torch_threads import torch_threads
from search.labelling.labeller import Evidence, Labeller, labelled_set
from search.labelling.learned_head import BLEND, KNN, PROBE, can_learn, choose, cross_validate

log = logging.getLogger(__name__)

SUSPICIOUS_METHODS = (KNN, PROBE, BLEND)  # the projection's training is too slow to run on every label
MAJORITY = 0.5  # the highest a class's threshold goes
SUSPICIOUS_MAX = 10_000  # labelled photos checked at most (a random sample beyond: CV holds an n x n block)


@dataclass(frozen=True)
class Suspect:
    image_id: int
    label: str  # the label the photo has
    suggested: str  # the class the out-of-fold prediction prefers
    confidence: float  # out-of-fold p(suggested)
    margin: float  # p(suggested) - p(given): the ranking's key
    neighbours: list[Evidence]  # its nearest labelled neighbours, nearest first


@dataclass(frozen=True)
class Ranking:
    """Row indices of the suspicious photos, worst first, with their suggested class and numbers."""

    rows: npt.NDArray[np.int64]
    suggested: npt.NDArray[np.int64]
    confidence: npt.NDArray[np.float64]  # p(suggested)
    margin: npt.NDArray[np.float64]  # p(suggested) - p(given)


def rank_suspicious(p: npt.NDArray[np.float64], given: npt.NDArray[np.int64]) -> Ranking:
    """Confident learning on out-of-fold probabilities p [N, C] of photos labelled `given` [N].

    Rows of zeros (no prediction) are never suspicious; neither is a class nobody labelled. Nor is
    a photo whose label no other photo has (`checkable`): held out, its class is in no training
    fold, so its out-of-fold p(given) is 0 whatever the photo shows; as a suggestion, such a class
    needs a majority (its own mean is 0: any p would beat it).
    """
    n, c = p.shape
    counts = np.bincount(given, minlength=c)
    thresholds = np.full(c, np.inf)
    for j in range(c):
        mine = (given == j) & (p.sum(axis=1) > 0)
        if mine.any():
            thresholds[j] = min(p[mine, j].mean(), MAJORITY) if counts[j] >= 2 else MAJORITY
    p_given = p[np.arange(n), given]
    confident = (p >= thresholds[None, :]) & (p > p_given[:, None])
    confident[np.arange(n), given] = False
    confident[~checkable(given)] = False
    candidates = np.where(confident, p, -np.inf)
    suggested = candidates.argmax(axis=1) if c else np.zeros(n, dtype=np.int64)
    rows = np.flatnonzero(confident.any(axis=1))
    margin = p[rows, suggested[rows]] - p_given[rows]
    order = np.argsort(-margin, kind="stable")
    rows = rows[order]
    return Ranking(rows, suggested[rows], p[rows, suggested[rows]], margin[order])


def checkable(given: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    """The photos whose label another photo has too: the only ones cross-validation can check."""
    return np.bincount(given)[given] >= 2 if len(given) else np.zeros(0, dtype=bool)


@dataclass(frozen=True)
class Check:
    suspects: list[Suspect]  # worst first, at most the limit asked for
    found: int  # suspicious photos in all
    checked: int  # labelled photos cross-validated whose label another photo has too (0: too few labels)


def suspicious(labeller: Labeller, limit: int | None = None, seed: int = 0) -> Check:
    """The labelled photos whose label looks wrong, worst first (at most `limit`)."""
    labeller.refresh()  # the stored neighbour lists the evidence comes from
    data = labelled_set(labeller.library)
    classes = sorted(set(data.labels))
    code = {name: i for i, name in enumerate(classes)}
    codes = np.array([code[name] for name in data.labels], dtype=np.int64)
    if not can_learn(codes):
        return Check([], 0, 0)
    ids, vectors = data.ids, np.ascontiguousarray(data.vectors, dtype=np.float32)
    if len(codes) > SUSPICIOUS_MAX:
        keep = np.sort(np.random.default_rng(seed).permutation(len(codes))[:SUSPICIOUS_MAX])
        ids, vectors, codes = ids[keep], vectors[keep], codes[keep]
    with torch_threads():
        cv = cross_validate(vectors, codes, len(classes), labeller.k, labeller.temperature,
                            SUSPICIOUS_METHODS, seed, max_images=len(codes))
    method = choose(cv)
    ranking = rank_suspicious(cv.probabilities[method], codes)
    log.info("suspicious labels: %d of %d by %s", len(ranking.rows), len(codes), method)
    rows = ranking.rows if limit is None else ranking.rows[:limit]
    evidence = labeller.evidence(ids[rows].tolist())
    out = [
        Suspect(
            int(ids[r]), classes[codes[r]], classes[ranking.suggested[i]], float(ranking.confidence[i]),
            float(ranking.margin[i]), [e for e in evidence.get(int(ids[r]), []) if e.label is not None],
        )
        for i, r in enumerate(rows)
    ]
    return Check(out, len(ranking.rows), int(checkable(codes).sum()))
