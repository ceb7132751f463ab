"""The learned head on real vectors: training, selection by cross-validation, calibration, edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select

from indexer.library import Library
from indexer.schema import Image
from search.labelling.calibration import fit_temperature, threshold_for, with_temperature
from search.labelling.labeller import labelled_set
from search.labelling.learned_head import (
    BLEND,
    KNN,
    METHODS,
    PROBE,
    CrossValidation,
    choose,
    choose_from,
    knn_tally,
    train_head,
)


@pytest.fixture(scope="module")
def sample_vectors(sample_library_dir):
    """The 120 indexed sample photos (real backbone vectors) and their folder labels."""
    with Library(sample_library_dir) as lib:
        ids, vectors = lib.stored_vectors()
        with lib.Session() as s:
            folders = dict(s.execute(select(Image.id, Image.folder)).all())
    return vectors, [folders[int(i)] for i in ids]


def test_all_methods_are_cross_validated_and_the_choice_is_the_best(sample_vectors):
    vectors, labels = sample_vectors
    head = train_head(vectors, labels, k=20, knn_temperature=0.07)
    assert set(head.accuracy) == set(METHODS)
    assert head.accuracy[head.method] == max(head.accuracy.values())
    assert head.accuracy[head.method] > head.accuracy[KNN] or head.method == KNN
    assert head.cv_images == 120 and len(head.classes) == 10
    assert head.temperature > 0
    # On these photos a learned method measures better than the raw k-NN vote.
    assert max(head.accuracy[m] for m in METHODS if m != KNN) > head.accuracy[KNN]


def test_fewer_labels_than_classes_still_trains(sample_vectors):
    vectors, labels = sample_vectors
    wanted = {"hat": 2, "shoes": 2, "dress": 1, "pants": 1, "skirt": 1, "shirt": 1}
    idx = [i for lab, n in wanted.items() for i in [j for j, x in enumerate(labels) if x == lab][:n]]
    head = train_head(vectors[idx], [labels[i] for i in idx], k=20, knn_temperature=0.07)
    assert len(idx) == 8 < 10
    assert len(head.classes) == 6
    assert set(head.accuracy) == set(METHODS)
    p = head.probabilities(vectors, knn_tally(vectors @ vectors[idx].T, _codes(head, labels, idx), 6, 20, 0.07),
                           vectors[idx], _codes(head, labels, idx))
    assert p.shape == (120, 6)
    assert np.allclose(p.sum(axis=1), 1)


def _codes(head, labels, idx):
    return np.array([head.classes.index(labels[i]) for i in idx])


@pytest.mark.parametrize(
    "labels",
    [
        [],  # no labels
        ["hat"],  # one label
        ["hat"] * 5,  # a single class
        ["hat", "shoes", "dress"],  # one label per class: nothing to cross-validate
    ],
)
def test_too_few_labels_give_plain_knn(sample_vectors, labels):
    vectors, _ = sample_vectors
    head = train_head(vectors[: len(labels)], labels, k=20, knn_temperature=0.07)
    assert head.method == KNN
    assert head.accuracy == {} and head.cv_images == 0
    assert head.temperature == 1.0 and head.threshold is None
    assert head.classes == tuple(sorted(set(labels)))


def test_ties_keep_knn_and_strictly_better_wins():
    codes = np.array([0, 1, 0, 1])
    right = np.eye(2)[codes]
    wrong = np.eye(2)[1 - codes]
    half = np.vstack([right[:2], wrong[2:]])
    cv = CrossValidation(codes, {KNN: half, PROBE: half.copy(), BLEND: half.copy()}, 0.5)
    assert choose(cv) == KNN
    cv = CrossValidation(codes, {KNN: half, PROBE: right, BLEND: right}, 0.5)
    assert choose(cv) == PROBE  # equal to blend: the simpler one
    assert choose_from({KNN: 0.9, PROBE: 0.9, BLEND: 0.91}) == BLEND
    assert choose_from({}) == KNN


def test_temperature_scaling_fixes_over_and_under_confidence():
    rng = np.random.default_rng(0)
    n, c = 2000, 4
    truth = rng.integers(c, size=n)
    # A model that is right 70 % of the time but says 99 %: overconfident.
    guess = np.where(rng.random(n) < 0.7, truth, (truth + 1) % c)
    over = np.full((n, c), 0.01 / (c - 1))
    over[np.arange(n), guess] = 0.99
    t = fit_temperature(over, truth)
    assert t > 1
    calibrated = with_temperature(over, t)
    assert abs(calibrated.max(axis=1).mean() - 0.7) < 0.05
    # The same hits reported at 40 %: underconfident.
    under = np.full((n, c), 0.6 / (c - 1))
    under[np.arange(n), guess] = 0.4
    assert fit_temperature(under, truth) < 1
    # Zeros (no vote) stay zero, rows of zeros stay zeros, rows still sum to one.
    p = np.array([[0.5, 0.5, 0.0], [0.0, 0.0, 0.0], [0.9, 0.1, 0.0]])
    q = with_temperature(p, 0.5)
    assert q[0, 2] == 0 and not q[1].any() and np.allclose(q[[0, 2]].sum(axis=1), 1)
    assert q[2, 0] > 0.9


def test_threshold_keeps_ties_together():
    conf = np.array([0.9, 0.8, 0.8, 0.7])
    correct = np.array([True, True, False, True])
    assert threshold_for(conf, correct, 1.0) == 0.9
    assert threshold_for(conf, correct, 0.75) == 0.7
    assert threshold_for(conf, np.zeros(4, bool), 0.5) is None


@pytest.mark.slow
def test_calibrated_confidence_holds_on_unseen_photos(tmp_path):
    """On clothing_small: suggestions at or above the head's 95 % threshold are right on held-out photos."""
    from tests.conftest import shared_corpus

    corpus = shared_corpus("clothing_small")
    vectors, labels = _clothing_vectors(corpus, tmp_path)
    rng = np.random.default_rng(3)
    order = rng.permutation(len(labels))
    train, test = order[:600], order[600:]
    head = train_head(vectors[train], [labels[i] for i in train], k=20, knn_temperature=0.07)
    assert head.threshold is not None
    codes = np.array([head.classes.index(labels[i]) for i in train])
    tally = knn_tally(vectors[test] @ vectors[train].T, codes, len(head.classes), 20, 0.07)
    p = head.probabilities(vectors[test], tally, vectors[train], codes)
    confident = p.max(axis=1) >= head.threshold
    right = np.array([head.classes[j] for j in p.argmax(axis=1)]) == np.array([labels[i] for i in test])
    assert confident.mean() > 0.2
    assert right[confident].mean() >= 0.92  # 95 % in cross-validation; a held-out sample wobbles


def _clothing_vectors(corpus, tmp_path):
    """clothing_small's vectors from the library the benchmark keeps (indexing it takes minutes)."""
    from bench.label_simulation import DEFAULT_LIBRARY
    from indexer.library import Library

    if not (DEFAULT_LIBRARY / "library.db").exists():
        pytest.skip(f"index clothing_small into {DEFAULT_LIBRARY} first (python -m bench.label_simulation)")
    with Library(DEFAULT_LIBRARY) as lib:
        data = labelled_set(lib)
    return data.vectors, data.labels
