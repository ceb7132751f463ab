"""Confidence calibration: temperature scaling fitted on cross-validated predictions, and thresholds."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

_EPS = 1e-12
_GRID = np.exp(np.linspace(np.log(0.05), np.log(20.0), 121))  # temperatures tried, log-spaced


def with_temperature(p: npt.NDArray[np.float64], temperature: float) -> npt.NDArray[np.float64]:
    """Probabilities sharpened (T < 1) or softened (T > 1): p ** (1 / T), each row renormalised.

    A zero stays zero and a row of zeros (no prediction) stays zeros.
    """
    p = np.asarray(p, dtype=np.float64)
    if temperature == 1.0 or p.size == 0:
        return p
    logp = np.log(np.maximum(p, _EPS)) / temperature
    logp -= logp.max(axis=1, keepdims=True)
    out = np.where(p > 0, np.exp(logp), 0.0)
    total = out.sum(axis=1, keepdims=True)
    return np.divide(out, total, out=np.zeros_like(out), where=total > 0)


def fit_temperature(p: npt.NDArray[np.float64], truth: npt.NDArray[np.int64]) -> float:
    """The temperature that minimises the negative log-likelihood of the true classes (1.0 if unknowable).

    Rows without a prediction (all zeros) do not count.
    """
    p = np.asarray(p, dtype=np.float64)
    rows = p.sum(axis=1) > 0
    if rows.sum() < 2:
        return 1.0
    p, truth = p[rows], np.asarray(truth)[rows]
    best, best_loss = 1.0, float("inf")
    for t in _GRID:
        q = with_temperature(p, t)
        loss = -float(np.mean(np.log(np.maximum(q[np.arange(len(truth)), truth], 1e-6))))
        if loss < best_loss - 1e-12:
            best, best_loss = float(t), loss
    return round(best, 4)


def threshold_for(
    confidences: npt.NDArray[np.float64], correct: npt.NDArray[np.bool_], precision: float
) -> float | None:
    """The lowest confidence t at which predictions with confidence >= t are `precision` right.

    None if no threshold reaches it. Ties in confidence are kept together.
    """
    confidences = np.asarray(confidences, dtype=np.float64)
    if not len(confidences):
        return None
    order = np.argsort(-confidences, kind="stable")
    conf = confidences[order]
    cumulative = np.cumsum(np.asarray(correct)[order]) / np.arange(1, len(conf) + 1)
    # Only the last prediction of each run of equal confidences is a valid cut.
    last_of_tie = np.append(conf[1:] != conf[:-1], True)
    ok = np.flatnonzero(last_of_tie & (cumulative >= precision - 1e-12))
    return float(conf[ok[-1]]) if len(ok) else None
