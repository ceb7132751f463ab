"""The k-NN vote (DINO's eval_knn protocol): each labelled neighbour votes exp(sim / T).

The only place the vote is written: one image's vote with its tally (`vote`) and many images'
vote shares as a matrix (`vote_shares`) share the weight `exp((sim - best) / T)`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from search.searcher import PADDING

DEFAULT_K = 20
DEFAULT_TEMPERATURE = 0.07


@dataclass(frozen=True)
class Vote:
    label: str | None  # None when no labelled neighbour voted
    confidence: float  # the winner's share of the votes, 0..1
    margin: float  # winner's share minus the runner-up's, 0..1 (0 for a tie)
    tally: dict[str, float] = field(default_factory=dict)  # each label's share, best first


def weights(scores: npt.NDArray, best: npt.NDArray | float, temperature: float) -> npt.NDArray:
    """exp(s / T) scaled by exp(-best / T): the shares are unchanged, and nothing overflows."""
    return np.exp((scores - best) / temperature)


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
    keep = np.isfinite(scores) & (scores > PADDING)
    keep &= np.array([label is not None for label in labels], dtype=bool)
    if ids is not None:
        ids = np.asarray(ids).ravel()
        keep &= ids >= 0
        if query_id is not None:
            keep &= ids != query_id
    if not keep.any():
        return Vote(None, 0.0, 0.0, {})
    kept = scores[keep]
    each = weights(kept, kept.max(), temperature)
    totals: dict[str, float] = defaultdict(float)
    first: dict[str, int] = {}
    voters = [label for label, kept_it in zip(labels, keep, strict=False) if kept_it and label is not None]
    for rank, (label, weight) in enumerate(zip(voters, each, strict=False)):
        totals[label] += float(weight)
        first.setdefault(label, rank)
    ranked = sorted(totals, key=lambda lab: (-totals[lab], first[lab]))
    total = sum(totals.values())
    tally = {lab: totals[lab] / total for lab in ranked}
    best = tally[ranked[0]]
    runner_up = tally[ranked[1]] if len(ranked) > 1 else 0.0
    return Vote(ranked[0], best, best - runner_up, tally)


def vote_shares(
    rows: npt.NDArray[np.int64],
    codes: npt.NDArray[np.int64],
    scores: npt.NDArray,
    n_rows: int,
    n_classes: int,
    temperature: float,
) -> npt.NDArray[np.float64]:
    """Many images' vote shares [n_rows, n_classes]: voter i adds exp(scores[i] / T) to
    (rows[i], codes[i]), in the order given; each row sums to 1, or to 0 where nobody voted.

    The caller leaves out the voters that do not vote (unlabelled, padding, -inf)."""
    out = np.zeros((n_rows, n_classes))
    if not len(rows):
        return out
    best = np.full(n_rows, -np.inf, dtype=scores.dtype)
    np.maximum.at(best, rows, scores)
    np.add.at(out, (rows, codes), weights(scores, best[rows], temperature))
    total = out.sum(axis=1, keepdims=True)
    return np.divide(out, total, out=np.zeros_like(out), where=total > 0)
