"""A head learned on stored vectors: linear probe, learned projection, blend; chosen by cross-validation.

Everything here works on arrays (unit vectors [N, D] and class codes); `search.labelling.labeller` ties it
to a library. Training uses torch (autograd for the projection's neighbourhood loss, L-BFGS for the
probe) and is imported only inside the training functions; predicting is numpy, so reading
suggestions never pays torch's start-up.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from indexer.torch_threads import torch_threads
from search.labelling.calibration import fit_temperature, threshold_for, with_temperature
from search.labelling.spreading import ALPHA, Graph, alphas_for, spread
from search.labelling.vote import vote_shares

log = logging.getLogger(__name__)

KNN, PROBE, PROJECTION, BLEND = "knn", "probe", "projection", "blend"
SPREAD, SPREAD_BLEND = "spreading", "spreading_blend"  # label spreading over the stored lists (spreading.py)
METHODS = (KNN, PROBE, PROJECTION, BLEND)  # the methods that need only the labelled photos' vectors
GRAPH_METHODS = (SPREAD, SPREAD_BLEND)  # tried too when the stored neighbour lists are given
ALL_METHODS = (*METHODS, *GRAPH_METHODS)
TARGET_PRECISION = 0.95  # the About page and `learn` report the confidence that reaches this
CV_FOLDS = 3
CV_MAX = 1500  # cross-validate on at most this many labelled photos (a stratified sample)
MIN_PER_CLASS = 2  # a learned method is tried only when two classes have this many labels each
PROJECTION_DIM = 128
PROBE_WEIGHT_DECAY = 1e-4  # L2 on the probe's weights (features are standardised)
PROBE_ITERATIONS = 40
PROJECTION_STEPS = 40
PROJECTION_BATCH = 512
PROJECTION_TEMPERATURE = 0.07  # the same scale as the k-NN vote's exp(sim / T)
BLEND_WEIGHTS = (0.25, 0.5, 0.75)  # probe's share of the blend; the best one by cross-validation

FloatArray = npt.NDArray[np.float32]


# -- k-NN votes as a matrix -------------------------------------------------------------------------


def knn_tally(
    sims: npt.NDArray, train_codes: npt.NDArray[np.int64], n_classes: int, k: int, temperature: float
) -> npt.NDArray[np.float64]:
    """Each query's vote shares [Q, C] from its similarities to the training points [Q, N].

    The top-k neighbours vote exp(sim / T) (`vote_shares`); -inf similarities never vote.
    """
    q, n = sims.shape
    if n == 0 or q == 0:
        return np.zeros((q, n_classes))
    kk = min(k, n)
    top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk] if kk < n else np.tile(np.arange(n), (q, 1))
    s = np.take_along_axis(sims, top, 1).astype(np.float64).ravel()
    finite = np.isfinite(s)
    rows = np.repeat(np.arange(q), kk)[finite]
    return vote_shares(rows, train_codes[top].ravel()[finite], s[finite], q, n_classes, temperature)


# -- the two learned parts ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """Multinomial logistic regression on standardised vectors."""

    mean: FloatArray  # [D]
    scale: float
    weight: FloatArray  # [D, C]
    bias: FloatArray  # [C]

    def probabilities(self, vectors: FloatArray) -> npt.NDArray[np.float64]:
        # float64 products: BLAS sums a float32 product in an order that depends on the batch's
        # shape, which moved confidences by ~1e-6 between a chunked and a whole pass.
        x = (vectors.astype(np.float64) - self.mean) / self.scale
        return softmax(x @ self.weight.astype(np.float64) + self.bias)


def train_probe(vectors: FloatArray, codes: npt.NDArray[np.int64], n_classes: int) -> Probe:
    import torch

    mean = vectors.mean(axis=0)
    scale = float((vectors - mean).std()) or 1.0
    x = torch.from_numpy(np.array((vectors - mean) / scale, dtype=np.float32))
    y = torch.from_numpy(codes.astype(np.int64))
    w = torch.zeros(x.shape[1], n_classes, requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=PROBE_ITERATIONS, history_size=10,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y) + PROBE_WEIGHT_DECAY * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return Probe(mean.astype(np.float32), scale, w.detach().numpy(), b.detach().numpy())


def train_projection(vectors: FloatArray, codes: npt.NDArray[np.int64], seed: int = 0) -> FloatArray:
    """A linear map [D, d] under which same-label photos are nearest (NCA-style softmax loss).

    Starts from the principal directions, so before training the map keeps cosine neighbours.
    """
    import torch

    dim = min(PROJECTION_DIM, vectors.shape[1])
    x_all = torch.from_numpy(np.array(vectors, dtype=np.float32))  # a writable copy
    torch.manual_seed(seed)
    # The principal directions of the training vectors (randomised PCA: LAPACK's full SVD is slow).
    q = min(dim, len(vectors), vectors.shape[1])
    _, _, v = torch.pca_lowrank(x_all, q=q, center=True, niter=2)
    init = torch.zeros(vectors.shape[1], dim)
    init[:, :q] = v[:, :q]
    if q < dim:  # fewer photos than dimensions: fill with small random directions
        init[:, q:] = 0.01 * torch.randn(vectors.shape[1], dim - q)
    y_all = torch.from_numpy(codes.astype(np.int64))
    a = init.clone().requires_grad_(True)
    opt = torch.optim.Adam([a], lr=2e-3)
    gen = torch.Generator().manual_seed(seed)
    n = len(vectors)
    for _ in range(PROJECTION_STEPS):
        pick = torch.randperm(n, generator=gen)[:PROJECTION_BATCH]
        z = torch.nn.functional.normalize(x_all[pick] @ a, dim=1)
        y = y_all[pick]
        logits = z @ z.T / PROJECTION_TEMPERATURE
        logits.fill_diagonal_(-1e9)
        same = (y[:, None] == y[None, :]) & ~torch.eye(len(pick), dtype=torch.bool)
        has = same.any(dim=1)
        if not has.any():
            break
        log_all = torch.logsumexp(logits, dim=1)
        log_same = torch.logsumexp(logits.masked_fill(~same, -1e9), dim=1)
        loss = (log_all - log_same)[has].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return a.detach().numpy()


def project(vectors: FloatArray, projection: FloatArray) -> npt.NDArray[np.float64]:
    """Unit vectors in the learned projection, in float64 so a row's value does not depend on the
    shape of the batch it came in (float32 BLAS sums in a shape-dependent order)."""
    z = vectors.astype(np.float64) @ projection.astype(np.float64)
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    return z / np.maximum(norms, 1e-12)


def softmax(logits: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


# -- cross-validation and the chosen head -------------------------------------------------------------


@dataclass(frozen=True)
class Head:
    """The chosen method, its parts, its calibration and what cross-validation measured."""

    method: str
    classes: tuple[str, ...]
    temperature: float  # calibration: probabilities ** (1 / T), renormalised
    accuracy: dict[str, float]  # cross-validated accuracy of each method tried
    threshold: float | None  # calibrated confidence at which CV predictions reach TARGET_PRECISION
    coverage: float | None  # share of CV predictions at or above that confidence
    cv_images: int  # labelled photos cross-validation ran on (0: too few labels to compare)
    k: int
    knn_temperature: float
    probe: Probe | None = None
    projection: FloatArray | None = field(default=None, repr=False)
    blend_weight: float = 0.5  # the probe's share when method is blend
    spread_weight: float = 0.5  # the probe's share when method is spreading_blend
    spread_alpha: float = ALPHA  # label spreading's alpha, chosen by cross-validation

    def probabilities(
        self,
        vectors: FloatArray,
        knn: npt.NDArray[np.float64] | None,
        labelled: FloatArray | None = None,
        labelled_codes: npt.NDArray[np.int64] | None = None,
        spread: npt.NDArray | None = None,
    ) -> npt.NDArray[np.float64]:
        """Calibrated class probabilities [N, C] for these vectors, C the head's classes.

        `knn` is each vector's k-NN vote shares [N, C] (from the stored neighbour lists), needed by
        knn and blend; `labelled` and `labelled_codes` are the labelled photos, needed by projection;
        `spread` is each vector's label spreading distribution [N, C], needed by the graph methods.
        A row of zeros: no method could say anything (k-NN with no labelled neighbour).
        """
        c = len(self.classes)
        raw = self.predict(vectors, knn, np.arange(c), c, labelled, labelled_codes, spread)
        return with_temperature(raw, self.temperature)

    def predict(
        self,
        vectors: FloatArray | None,
        knn: npt.NDArray[np.float64] | None,
        columns: npt.NDArray[np.int64],
        n_classes: int,
        labelled: FloatArray | None = None,
        labelled_codes: npt.NDArray[np.int64] | None = None,
        spread: npt.NDArray | None = None,
    ) -> npt.NDArray[np.float64]:
        """Uncalibrated probabilities [N, n_classes] by the chosen method; `columns` holds each of the
        head's classes' column (a library may know classes the head was not trained on).

        k-NN needs only `knn` (no vectors), spreading only `spread` (in the same n_classes columns);
        the others need `vectors`, projection `labelled` too."""
        if self.method == KNN:
            return knn if knn is not None else np.zeros((len(vectors) if vectors is not None else 0, n_classes))
        if self.method == SPREAD:
            return (np.asarray(spread, dtype=np.float64) if spread is not None
                    else np.zeros((len(vectors) if vectors is not None else 0, n_classes)))
        if self.method == PROJECTION:
            return projected_knn(vectors, labelled, labelled_codes, self.projection, n_classes, self.k,
                                 self.knn_temperature)
        p = np.zeros((len(vectors), n_classes))  # type: ignore[arg-type]
        p[:, columns] = self.probe.probabilities(vectors)  # type: ignore[union-attr,arg-type]
        if self.method == SPREAD_BLEND:
            return blend(p, None if spread is None else np.asarray(spread, dtype=np.float64), self.spread_weight)
        return p if self.method == PROBE else blend(p, knn, self.blend_weight)


def blend(probe: npt.NDArray[np.float64], knn: npt.NDArray[np.float64] | None, weight: float):
    """weight * probe + (1 - weight) * k-NN (or spreading); the probe alone where no labelled
    neighbour voted (no seed reached the photo)."""
    if knn is None:
        return probe
    voted = knn.sum(axis=1, keepdims=True) > 0
    return np.where(voted, weight * probe + (1 - weight) * knn, probe)


def projected_knn(vectors, labelled, labelled_codes, projection, n_classes, k, temperature, chunk=4096):
    """k-NN vote shares among the labelled photos, in the learned projection."""
    out = np.zeros((len(vectors), n_classes))
    if labelled is None or labelled_codes is None or not len(labelled):
        return out
    lab = project(labelled, projection)
    for start in range(0, len(vectors), chunk):
        z = project(vectors[start : start + chunk], projection)
        out[start : start + chunk] = knn_tally(z @ lab.T, labelled_codes, n_classes, k, temperature)
    return out


def folds_for(codes: npt.NDArray[np.int64], n_folds: int, rng: np.random.Generator) -> npt.NDArray[np.int64]:
    """Stratified fold numbers: each class dealt round-robin over the folds in a random order."""
    fold = np.zeros(len(codes), dtype=np.int64)
    offset = 0
    for c in np.unique(codes):
        members = rng.permutation(np.flatnonzero(codes == c))
        fold[members] = (np.arange(len(members)) + offset) % n_folds
        offset += len(members)  # small classes do not all land in fold 0
    return fold


def can_learn(codes: npt.NDArray[np.int64]) -> bool:
    counts = np.bincount(codes) if len(codes) else np.zeros(0, dtype=np.int64)
    return int((counts >= MIN_PER_CLASS).sum()) >= 2


@dataclass(frozen=True)
class CrossValidation:
    """Out-of-fold probabilities [N, C] of every method on the labelled photos it sampled."""

    codes: npt.NDArray[np.int64]
    probabilities: dict[str, npt.NDArray[np.float64]]
    blend_weight: float
    spread_weight: float = 0.5
    spread_alpha: float = ALPHA

    def accuracy(self, method: str) -> float:
        p = self.probabilities[method]
        return float(np.mean(predicted(p) == self.codes))


def predicted(p: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """The arg-max class, -1 where the row is all zeros (no prediction)."""
    return np.where(p.max(axis=1) > 0, p.argmax(axis=1), -1)


def cross_validate(
    vectors: FloatArray,
    codes: npt.NDArray[np.int64],
    n_classes: int,
    k: int,
    knn_temperature: float,
    methods: tuple[str, ...] = ALL_METHODS,
    seed: int = 0,
    max_images: int = CV_MAX,
    graph: Graph | None = None,
    nodes: npt.NDArray[np.int64] | None = None,
) -> CrossValidation:
    """Out-of-fold predictions of each method (at most `max_images` photos, a random sample).

    The graph methods run only with `graph` (the stored lists) and `nodes` (each labelled photo's
    node in it, -1 if absent): a fold's labelled photos seed a spreading over every photo.
    """
    rng = np.random.default_rng(seed)
    if graph is None or nodes is None:
        methods = tuple(m for m in methods if m not in GRAPH_METHODS)
    if len(codes) > max_images:
        keep = np.sort(rng.permutation(len(codes))[:max_images])
        vectors, codes = vectors[keep], codes[keep]
        nodes = nodes[keep] if nodes is not None else None
    n_folds = int(min(CV_FOLDS, max(2, np.bincount(codes).max())))
    fold = folds_for(codes, n_folds, rng)
    sims = vectors @ vectors.T
    out = {m: np.zeros((len(codes), n_classes)) for m in methods if m not in (BLEND, SPREAD_BLEND)}
    if SPREAD_BLEND in methods and SPREAD not in out:
        out[SPREAD] = np.zeros((len(codes), n_classes))
    by_alpha = ({a: np.zeros((len(codes), n_classes)) for a in alphas_for(graph)}
                if SPREAD in out and graph is not None else {})
    for f in range(n_folds):
        test, train = fold == f, fold != f
        if not test.any() or not train.any():
            continue
        if KNN in out:
            out[KNN][test] = knn_tally(sims[np.ix_(test, train)], codes[train], n_classes, k, knn_temperature)
        learnable = len(np.unique(codes[train])) >= 2
        if PROBE in out and learnable:
            out[PROBE][test] = _full(train_probe(vectors[train], codes[train], n_classes), vectors[test])
        if PROJECTION in out and learnable:
            a = train_projection(vectors[train], codes[train], seed=seed + f)
            out[PROJECTION][test] = projected_knn(
                vectors[test], vectors[train], codes[train], a, n_classes, k, knn_temperature
            )
        if SPREAD in out and graph is not None and nodes is not None:
            at = nodes[test]
            for alpha in by_alpha:  # each alpha's out-of-fold distributions; the best is kept below
                f_all = spread(graph, nodes[train], codes[train], n_classes, alpha=alpha)
                by_alpha[alpha][test] = np.where((at >= 0)[:, None], f_all[np.maximum(at, 0)], 0.0)
    weight = 0.5
    if BLEND in methods and KNN in out and PROBE in out:
        scored = {w: float(np.mean(predicted(blend(out[PROBE], out[KNN], w)) == codes)) for w in BLEND_WEIGHTS}
        weight = max(BLEND_WEIGHTS, key=lambda w: (scored[w], -abs(w - 0.5)))
        out[BLEND] = blend(out[PROBE], out[KNN], weight)
    spread_weight, spread_alpha = 0.5, ALPHA
    if by_alpha:
        scored = {a: float(np.mean(predicted(p) == codes)) for a, p in by_alpha.items()}
        spread_alpha = max(by_alpha, key=lambda a: (scored[a], a))  # among equals, the longer reach
        out[SPREAD] = by_alpha[spread_alpha]
    if SPREAD_BLEND in methods and SPREAD in out and PROBE in out:
        scored = {w: float(np.mean(predicted(blend(out[PROBE], out[SPREAD], w)) == codes)) for w in BLEND_WEIGHTS}
        spread_weight = max(BLEND_WEIGHTS, key=lambda w: (scored[w], -abs(w - 0.5)))
        out[SPREAD_BLEND] = blend(out[PROBE], out[SPREAD], spread_weight)
    if SPREAD not in methods:
        out.pop(SPREAD, None)
    return CrossValidation(codes, out, weight, spread_weight, spread_alpha)


def _full(probe: Probe, vectors: FloatArray) -> npt.NDArray[np.float64]:
    return probe.probabilities(vectors)


def choose(cv: CrossValidation) -> str:
    """The most accurate method; k-NN unless another gets strictly more photos right."""
    return choose_from({m: cv.accuracy(m) for m in cv.probabilities})


def choose_from(accuracy: dict[str, float]) -> str:
    """k-NN unless a method measures strictly better; among equals, the simpler (earlier in ALL_METHODS)."""
    best = KNN
    for m in ALL_METHODS:
        if m in accuracy and accuracy[m] > accuracy.get(best, -1.0):
            best = m
    return best


def train_head(
    vectors: FloatArray,
    labels: list[str],
    k: int,
    knn_temperature: float,
    *,
    methods: tuple[str, ...] = ALL_METHODS,
    seed: int = 0,
    graph: Graph | None = None,
    nodes: npt.NDArray[np.int64] | None = None,
) -> Head:
    """Cross-validate the methods on these labelled unit vectors, keep the best, fit it on all of them.

    With `graph` (the stored lists) and `nodes` (each labelled photo's node), label spreading and its
    blend with the probe are among the methods; the labeller spreads from every label when predicting.

    Sensible at every size: with no labels, one class, or fewer than two classes with two labels,
    the head is plain k-NN (uncalibrated, nothing to measure).
    """
    classes = tuple(sorted(set(labels)))
    code = {c: i for i, c in enumerate(classes)}
    codes = np.array([code[lab] for lab in labels], dtype=np.int64)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if not can_learn(codes):
        return Head(KNN, classes, 1.0, {}, None, None, 0, k, knn_temperature)
    if KNN not in methods:
        methods = (KNN, *methods)
    with torch_threads():
        cv = cross_validate(vectors, codes, len(classes), k, knn_temperature, methods, seed, graph=graph,
                            nodes=nodes)
        method = choose(cv)
        probe = train_probe(vectors, codes, len(classes)) if method in (PROBE, BLEND, SPREAD_BLEND) else None
        projection = train_projection(vectors, codes, seed) if method == PROJECTION else None
    accuracy = {m: round(cv.accuracy(m), 4) for m in cv.probabilities}
    raw = cv.probabilities[method]
    temperature = fit_temperature(raw, cv.codes)
    calibrated = with_temperature(raw, temperature)
    conf = calibrated.max(axis=1)
    correct = predicted(calibrated) == cv.codes
    threshold = threshold_for(conf, correct, TARGET_PRECISION)
    coverage = float(np.mean(conf >= threshold)) if threshold is not None else None
    log.info("head: %s chosen from %s (T=%.2f)", method, accuracy, temperature)
    return Head(
        method, classes, temperature, accuracy, threshold, coverage, len(cv.codes), k, knn_temperature,
        probe=probe, projection=projection, blend_weight=cv.blend_weight, spread_weight=cv.spread_weight,
        spread_alpha=cv.spread_alpha,
    )
