"""Label spreading over the stored neighbour lists of the real sample library (120 photos, 10 classes)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from search.labelling import spreading
from search.labelling.labeller import Labeller, labelled_set
from search.labelling.learned_head import GRAPH_METHODS, METHODS, PROBE, SPREAD, SPREAD_BLEND, train_head
from search.labelling.spreading import build_graph, load_graph, spread
from search.searcher import Searcher
from tests.search.labelling.test_learning import folders, label_some, unlabelled_suggestions


def test_a_graph_from_list_entries_is_symmetric_and_normalised():
    # 0 -> 1 (0.9), 1 -> 2 (0.5); node 3 has no entry: it is in the graph, with no edge.
    g = build_graph([10, 11], [11, 12], [0.9, 0.5], nodes=[10, 11, 12, 13])
    assert g.ids.tolist() == [10, 11, 12, 13] and g.indptr.tolist() == [0, 1, 3, 4, 4]
    dense = np.zeros((4, 4))
    for row in range(4):
        for at in range(g.indptr[row], g.indptr[row + 1]):
            dense[row, g.columns[at]] = g.weights[at]
    np.testing.assert_allclose(dense, dense.T, rtol=1e-6)
    w01, w12 = 0.9**3, 0.5**3
    d = np.array([w01, w01 + w12, w12])
    assert np.isclose(dense[0, 1], w01 / np.sqrt(d[0] * d[1]), rtol=1e-5)
    assert g.nodes([13, 12, 99]).tolist() == [3, 2, -1]
    # Seeds at both ends: the middle photo leans to the closer one; the isolated photo gets nothing.
    f = spread(g, g.nodes([10, 12]), [0, 1], 2)
    assert f[1, 0] > f[1, 1] and np.allclose(f[:3].sum(axis=1), 1) and f[3].tolist() == [0, 0]


def test_a_small_library_is_not_offered_spreading(sample_library):
    label_some(sample_library, 4)
    labeller = Labeller(Searcher(sample_library))
    head = labeller.retrain()
    assert labeller.graph() is None and set(head.accuracy) == set(METHODS)


def test_spreading_on_the_stored_lists_labels_the_rest(sample_library, monkeypatch):
    labelled = label_some(sample_library, 3)
    labeller = Labeller(Searcher(sample_library))
    labeller.refresh()
    graph = load_graph(sample_library, labeller.k)
    assert graph is not None and graph.size == 120
    # The lists' entries twice (both directions), never 120 x 120.
    assert len(graph.columns) <= 2 * 120 * labeller.k
    classes = sorted(set(labelled.values()))
    seeds = np.array(sorted(labelled))
    codes = np.array([classes.index(labelled[i]) for i in seeds])
    f = spread(graph, graph.nodes(seeds), codes, len(classes), alpha=0.5)  # the alpha CV picks here
    assert f.shape == (120, 10) and np.allclose(f.sum(axis=1), 1, atol=1e-5)
    truth = folders(sample_library)
    rest = [i for i in graph.ids.tolist() if i not in labelled]
    predicted = f[graph.nodes(rest)].argmax(axis=1)
    accuracy = np.mean([classes[p] == truth[i] for p, i in zip(predicted, rest, strict=True)])
    assert accuracy >= 0.6  # chance: 0.1; the k-NN vote of these seeds gets 0.7
    # Each seed keeps its own class.
    assert (f[graph.nodes(seeds)].argmax(axis=1) == codes).all()
    # numpy gathering a few rows at a time, and torch's sparse product: the same answer.
    monkeypatch.setattr(spreading, "ROW_CHUNK", 7)
    for engine in ("numpy", "torch"):
        np.testing.assert_allclose(spread(graph, graph.nodes(seeds), codes, len(classes), alpha=0.5, engine=engine),
                                   f, rtol=1e-5, atol=1e-7)


def test_spreading_is_chosen_by_cross_validation_and_calibrated_like_the_others(sample_library, monkeypatch):
    # The labeller offers spreading from SPREAD_MIN_PHOTOS photos on: here the 120 sample photos.
    monkeypatch.setattr(spreading, "SPREAD_MIN_PHOTOS", 100)
    label_some(sample_library, 4)
    labeller = Labeller(Searcher(sample_library))
    head = labeller.retrain()
    # Every method, spreading and its blend with the probe included, measured on the same folds.
    assert set(head.accuracy) == {*METHODS, *GRAPH_METHODS}
    assert all(0.5 <= head.accuracy[m] <= 1 for m in GRAPH_METHODS)
    facts = labeller.facts()
    assert set(facts["accuracy"]) == set(head.accuracy)

    # Forced to each graph method: suggestions for every photo, calibrated on the out-of-fold
    # predictions (a fitted temperature), and their mean confidence near their accuracy.
    data = labelled_set(sample_library)
    graph = labeller.graph()
    nodes = graph.nodes(data.ids)
    truth = folders(sample_library)
    for method in (SPREAD, SPREAD_BLEND):
        methods = (method,) if method == SPREAD else (PROBE, SPREAD, SPREAD_BLEND)  # a blend needs its parts
        trained = train_head(data.vectors, data.labels, labeller.k, labeller.temperature,
                             methods=methods, graph=graph, nodes=nodes)
        assert set(trained.accuracy) == {"knn", *methods}
        forced = replace(trained, method=method) if trained.method != method else trained
        if forced.method == SPREAD_BLEND and forced.probe is None:
            from search.labelling.learned_head import train_probe

            codes = np.array([forced.classes.index(lab) for lab in data.labels])
            forced = replace(forced, probe=train_probe(data.vectors, codes, len(forced.classes)))
        predictions = labeller.predict_all(forced)
        rest = [k for k, i in enumerate(predictions.ids.tolist()) if i not in set(data.ids.tolist())]
        right = np.array([predictions.label(k) == truth[int(predictions.ids[k])] for k in rest])
        confidence = predictions.confidence[rest]
        assert right.mean() >= 0.6  # chance: 0.1
        assert 0 < confidence.min() and confidence.max() <= 1
        assert abs(confidence.mean() - right.mean()) <= 0.2, (method, confidence.mean(), right.mean())


def test_the_labeller_suggests_by_spreading_when_it_measures_best(sample_library, monkeypatch):
    """With spreading the only learned method on offer, the stored head uses it for every suggestion."""
    from search.labelling import labeller as labeller_module
    from search.labelling import learned_head

    monkeypatch.setattr(spreading, "SPREAD_MIN_PHOTOS", 100)
    label_some(sample_library, 4)
    real = learned_head.train_head

    def only_spreading(*args, **kwargs):
        return real(*args, **{**kwargs, "methods": (SPREAD,)})

    monkeypatch.setattr(labeller_module, "train_head", only_spreading)
    labeller = Labeller(Searcher(sample_library))
    head = labeller.retrain()
    assert set(head.accuracy) == {"knn", SPREAD}
    assert head.accuracy[SPREAD] > head.accuracy["knn"]
    assert head.method == SPREAD and head.temperature > 0
    suggestions = unlabelled_suggestions(sample_library)
    assert len(suggestions) == 80 and all(lab is not None for lab, _ in suggestions.values())
    truth = folders(sample_library)
    assert np.mean([lab == truth[i] for i, (lab, _) in suggestions.items()]) >= 0.6
