"""A linear probe: multinomial logistic regression on standardised unit vectors (L-BFGS).

The warm start of fine-tuning's head (LP-FT) and the yardstick a tuned representation is scored by.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

PROBE_WEIGHT_DECAY = 1e-4  # L2 on the weights (the inputs are standardised)
PROBE_ITERATIONS = 40


@dataclass(frozen=True)
class LinearProbe:
    """logits = ((x - mean) / scale) @ weight + bias, for unit vectors x [N, D]."""

    mean: npt.NDArray[np.float32]  # [D]
    scale: float
    weight: npt.NDArray[np.float32]  # [D, C]
    bias: npt.NDArray[np.float32]  # [C]

    def logits(self, vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return (((vectors - self.mean) / self.scale) @ self.weight + self.bias).astype(np.float32)

    def accuracy(self, vectors: npt.NDArray[np.float32], codes: npt.NDArray[np.int64]) -> float:
        if not len(codes):
            return float("nan")
        return float((self.logits(vectors).argmax(axis=1) == codes).mean())


def fit_probe(
    vectors: npt.NDArray[np.float32], codes: npt.NDArray[np.int64], n_classes: int,
    *, iterations: int = PROBE_ITERATIONS, weight_decay: float = PROBE_WEIGHT_DECAY,
) -> LinearProbe:
    """Fit the probe on unit vectors [N, D] and class codes in [0, n_classes)."""
    import torch

    mean = vectors.mean(axis=0)
    scale = float((vectors - mean).std()) or 1.0
    x = torch.from_numpy(np.array((vectors - mean) / scale, dtype=np.float32))
    y = torch.from_numpy(np.asarray(codes, dtype=np.int64))
    w = torch.zeros(x.shape[1], n_classes, requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=iterations, history_size=10, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y) + weight_decay * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return LinearProbe(mean.astype(np.float32), scale, w.detach().numpy().copy(), b.detach().numpy().copy())
