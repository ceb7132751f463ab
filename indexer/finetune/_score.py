"""Scoring a tuned representation against the frozen one: a probe refit on each one's vectors, and
each held-out photo's outcome under both (pooled over folds, then tested: indexer.finetune._paired)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from indexer.backbone import Backbone
from indexer.cancel import check
from indexer.finetune._paired import TIE, calibrated, sign_flip_p_value
from indexer.finetune._probe import fit_probe
from indexer.imageio import ImageError, load_image


@dataclass(frozen=True)
class CandidateScore:
    """Held-out accuracy of a linear probe refit on each representation's vectors of the same photos."""

    frozen_accuracy: float
    tuned_accuracy: float
    n_train: int
    n_heldout: int

    # Per held-out photo: each probe's logits [N, classes] and the photo's label (the paired test's input).
    frozen_logits: npt.NDArray[np.float32] = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    tuned_logits: npt.NDArray[np.float32] = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    codes: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def frozen_loglik(self) -> npt.NDArray[np.float64]:
        """Each held-out photo's label log-likelihood under the frozen probe, temperature-calibrated."""
        return calibrated(self.frozen_logits, self.codes)

    @property
    def tuned_loglik(self) -> npt.NDArray[np.float64]:
        return calibrated(self.tuned_logits, self.codes)

    @property
    def gain(self) -> float:
        return self.tuned_accuracy - self.frozen_accuracy

    @property
    def loglik_gain(self) -> float:
        """Mean paired difference of the labels' calibrated log-likelihood, tuned minus frozen (nats a
        photo); differences under the test's TIE count as 0, so calibration noise is no gain."""
        d = self.tuned_loglik - self.frozen_loglik
        d = np.where(np.abs(d) < TIE, 0.0, d)
        return float(d.mean()) if len(d) else 0.0

    @property
    def p_value(self) -> float:
        """One-sided paired p-value of "the tuned vectors are no better" on the held-out photos."""
        return sign_flip_p_value(self.tuned_loglik - self.frozen_loglik)


def pooled(scores: Sequence[CandidateScore]) -> CandidateScore:
    """Folds' scores as one: each held-out photo counted once (accuracies weighted by photos)."""
    n = sum(s.n_heldout for s in scores)

    def mean(attr: str) -> float:
        return sum(getattr(s, attr) * s.n_heldout for s in scores) / n if n else float("nan")

    return CandidateScore(mean("frozen_accuracy"), mean("tuned_accuracy"), sum(s.n_train for s in scores), n,
                          np.concatenate([s.frozen_logits for s in scores]),
                          np.concatenate([s.tuned_logits for s in scores]), np.concatenate([s.codes for s in scores]))


def embed_files(
    backbone: Backbone, paths: Sequence[Path], *, engine: str = "auto", batch_size: int = 32,
    cancel: threading.Event | None = None,
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float32]]:
    """(decoded [N], unit vectors [N, D]) of photo files, preprocessed as the library's and run on
    `engine` (indexer.engines); rows of files that do not decode are zero and `decoded` False."""
    import torch

    from indexer.engines import make_engine

    run = make_engine(backbone, engine)
    pp = backbone.preprocess
    ok = np.zeros(len(paths), dtype=bool)
    out = np.zeros((len(paths), backbone.dim), dtype=np.float32)
    for start in range(0, len(paths), batch_size):
        check(cancel)
        rows, crops = [], []
        for i in range(start, min(start + batch_size, len(paths))):
            try:
                img, _ = load_image(Path(paths[i]), min_side=pp.resize)
            except (ImageError, OSError):
                continue
            rows.append(i)
            crops.append(pp.crop_uint8(img))
        if rows:
            out[rows] = run.embed_uint8(torch.stack(crops))
            ok[rows] = True
    return ok, out


def probe_accuracy(
    train: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]],
    test: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]],
    n_classes: int,
) -> float:
    """Accuracy on `test` (vectors, codes) of a linear probe fitted on `train` (vectors, codes)."""
    return fit_probe(train[0], train[1], n_classes).accuracy(*test)


def probe_outcomes(
    train: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]],
    test: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]],
    n_classes: int,
) -> tuple[float, npt.NDArray[np.float32]]:
    """(accuracy, logits [N, n_classes]) on `test` of a probe fitted on `train`."""
    logits = fit_probe(train[0], train[1], n_classes).logits(test[0])
    accuracy = float((logits.argmax(axis=1) == test[1]).mean()) if len(test[1]) else float("nan")
    return accuracy, logits


def score_candidate(
    train: Sequence[tuple[Path, int]],
    heldout: Sequence[tuple[Path, int]],
    n_classes: int,
    frozen: Backbone,
    tuned: Backbone,
    *,
    engine: str = "auto",
    cancel: threading.Event | None = None,
) -> CandidateScore:
    """Probe accuracy on `heldout` after fitting on `train`, with `frozen`'s vectors and with `tuned`'s.

    Use held-out photos the tuned weights were not trained (nor early-stopped) on. Photos that do
    not decode are left out of both.
    """
    paths = [p for p, _ in train] + [p for p, _ in heldout]
    codes = np.asarray([c for _, c in train] + [c for _, c in heldout], dtype=np.int64)
    frozen_ok, frozen_vectors = embed_files(frozen, paths, engine=engine, cancel=cancel)
    tuned_ok, tuned_vectors = embed_files(tuned, paths, engine=engine, cancel=cancel)
    keep = frozen_ok & tuned_ok
    is_train = np.arange(len(paths)) < len(train)
    tr, te = keep & is_train, keep & ~is_train
    frozen_accuracy, frozen_logits = probe_outcomes((frozen_vectors[tr], codes[tr]), (frozen_vectors[te], codes[te]),
                                                    n_classes)
    tuned_accuracy, tuned_logits = probe_outcomes((tuned_vectors[tr], codes[tr]), (tuned_vectors[te], codes[te]),
                                                  n_classes)
    return CandidateScore(frozen_accuracy, tuned_accuracy, int(tr.sum()), int(te.sum()), frozen_logits, tuned_logits,
                          codes[te])
