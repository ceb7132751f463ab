"""The labeller's methods side by side: cross-validated on all labels, and with only N labels per class."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from indexer.torch_threads import torch_threads
from search.labelling.learned_head import (
    ALL_METHODS,
    BLEND,
    CV_FOLDS,
    KNN,
    PROBE,
    PROJECTION,
    SPREAD,
    SPREAD_BLEND,
    blend,
    choose_from,
    cross_validate,
    knn_tally,
    predicted,
    projected_knn,
    train_head,
    train_probe,
    train_projection,
)
from search.labelling.spreading import ALPHA, Graph, spread

FEW_LABEL_DRAWS = 5  # --labels-per-class averages this many random draws
CHOSEN = "chosen"  # what the labeller would have picked by cross-validation on the few labels


@dataclass(frozen=True)
class FewLabelResult:
    per_class: int
    draws: int
    accuracy: dict[str, float]  # method (and "chosen") -> mean accuracy on the unlabelled rest
    spread: dict[str, float]  # method -> standard deviation over the draws


def encode(labels: list[str]) -> tuple[list[str], npt.NDArray[np.int64]]:
    classes = sorted(set(labels))
    code = {c: i for i, c in enumerate(classes)}
    return classes, np.array([code[lab] for lab in labels], dtype=np.int64)


def cross_validated(
    vectors: npt.NDArray[np.float32], labels: list[str], k: int, temperature: float,
    graph: Graph | None = None, nodes: npt.NDArray[np.int64] | None = None,
) -> dict[str, float]:
    """Each method's cross-validated accuracy (on at most head.CV_MAX labelled photos); label
    spreading's too when `graph` and each labelled photo's `nodes` are given."""
    classes, codes = encode(labels)
    with torch_threads():
        cv = cross_validate(np.ascontiguousarray(vectors, np.float32), codes, len(classes), k, temperature,
                            graph=graph, nodes=nodes)
    return {m: round(cv.accuracy(m), 4) for m in ALL_METHODS if m in cv.probabilities}


def predict_each(
    train: npt.NDArray[np.float32],
    train_codes: npt.NDArray[np.int64],
    test: npt.NDArray[np.float32],
    n_classes: int,
    k: int,
    temperature: float,
    blend_weight: float = 0.5,
    spreading: npt.NDArray | None = None,
    spread_weight: float = 0.5,
) -> dict[str, npt.NDArray[np.int64]]:
    """Every method fitted on `train`, predicting `test` (k-NN among the labelled photos only);
    `spreading`: the test photos' label spreading distributions, when a graph was given."""
    knn = knn_tally(test @ train.T, train_codes, n_classes, k, temperature)
    out = {KNN: predicted(knn)}
    if spreading is not None:
        out[SPREAD] = predicted(np.asarray(spreading, dtype=np.float64))
    if len(np.unique(train_codes)) >= 2:
        with torch_threads():
            probe = train_probe(train, train_codes, n_classes).probabilities(test)
            out[PROBE] = predicted(probe)
            out[BLEND] = predicted(blend(probe, knn, blend_weight))
            if spreading is not None:
                out[SPREAD_BLEND] = predicted(blend(probe, np.asarray(spreading, dtype=np.float64), spread_weight))
            a = train_projection(train, train_codes)
            out[PROJECTION] = predicted(projected_knn(test, train, train_codes, a, n_classes, k, temperature))
    return out


def few_labels(
    vectors: npt.NDArray[np.float32],
    labels: list[str],
    per_class: int,
    k: int,
    temperature: float,
    draws: int = FEW_LABEL_DRAWS,
    seed: int = 0,
    graph: Graph | None = None,
    nodes: npt.NDArray[np.int64] | None = None,
) -> FewLabelResult:
    """Accuracy on the unlabelled rest when only `per_class` photos of each class are labelled.

    Classes with no more than `per_class` photos keep one unlabelled at least, so every class is
    scored; "chosen" is the method the labeller picks by cross-validation on those few labels.
    With `graph` and every photo's `nodes`, label spreading from the few labels over the whole graph
    (the unlabelled photos included) is among the methods.
    """
    if per_class < 1:
        raise ValueError("labels per class must be at least 1")
    vectors = np.ascontiguousarray(vectors, np.float32)
    classes, codes = encode(labels)
    rng = np.random.default_rng(seed)
    scores: dict[str, list[float]] = {}
    for d in range(draws):
        picked: list[int] = []
        for c in range(len(classes)):
            members = rng.permutation(np.flatnonzero(codes == c))
            picked.extend(members[: min(per_class, max(len(members) - 1, 1))])
        train = np.zeros(len(codes), bool)
        train[picked] = True
        test = ~train
        if not test.any():
            continue
        head = train_head(vectors[train], [classes[c] for c in codes[train]], k, temperature, seed=seed + d,
                          graph=graph, nodes=nodes[train] if nodes is not None else None)
        spreading = None
        if graph is not None and nodes is not None:
            f = spread(graph, nodes[train], codes[train], len(classes), alpha=head.spread_alpha or ALPHA)
            spreading = np.where((nodes[test] >= 0)[:, None], f[np.maximum(nodes[test], 0)], 0.0)
        preds = predict_each(vectors[train], codes[train], vectors[test], len(classes), k, temperature,
                             head.blend_weight, spreading, head.spread_weight)
        preds[CHOSEN] = preds.get(head.method, preds[KNN])
        for method, p in preds.items():
            scores.setdefault(method, []).append(float(np.mean(p == codes[test])))
    order = [m for m in (*ALL_METHODS, CHOSEN) if m in scores]
    return FewLabelResult(
        per_class,
        draws,
        {m: round(float(np.mean(scores[m])), 4) for m in order},
        {m: round(float(np.std(scores[m])), 4) for m in order},
    )


def compare_methods(library, k: int, temperature: float, labels_per_class: int | None) -> dict:
    """k-NN, probe, projection k-NN and blend side by side on a library's labels (and with N labels
    per class): what `lookalike eval` reports beside the k-NN figures."""
    from search.labelling.labeller import labelled_set
    from search.labelling.spreading import load_graph, worth_spreading

    data = labelled_set(library)
    graph = load_graph(library, k)  # None until the neighbour lists are built: no spreading then
    graph = graph if worth_spreading(graph) else None
    nodes = graph.nodes(data.ids) if graph is not None else None
    accuracy = cross_validated(data.vectors, data.labels, k, temperature, graph, nodes)
    out: dict = {"methods": accuracy, "chosen": choose_from(accuracy), "folds": CV_FOLDS}
    if labels_per_class is not None:
        few = few_labels(data.vectors, data.labels, labels_per_class, k, temperature, graph=graph, nodes=nodes)
        out["labels_per_class"] = {"n": few.per_class, "draws": few.draws, "accuracy": few.accuracy, "std": few.spread}
    return out
