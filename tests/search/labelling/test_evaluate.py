"""Leave-one-out k-NN evaluation: hand-made vectors with known answers, then real photos."""

from __future__ import annotations

import numpy as np
import pytest

from search.labelling.evaluate import EvalError, EvalReport, evaluate, evaluate_vectors
from tests.search.conftest import unit


def report_with(confidences, correct) -> EvalReport:
    return EvalReport(
        k=20,
        temperature=0.07,
        images=len(correct),
        class_names=["a"],
        top1=0,
        top5=0,
        precision_at_10=0,
        mean_ap=0,
        map_cutoff=None,
        per_class={},
        confusion={},
        confidences=np.array(confidences, dtype=float),
        correct=np.array(correct, dtype=bool),
    )


def test_threshold_for_is_the_lowest_confidence_reaching_the_precision():
    r = report_with([0.9, 0.8, 0.7, 0.6], [True, True, False, True])
    assert r.threshold_for(1.0) == 0.8
    assert r.threshold_for(0.75) == 0.6  # 3 of 4 right at >= 0.6
    assert r.threshold_for(0.8) == 0.8  # 2/3 at 0.7 is not enough, and 3/4 at 0.6 neither
    assert r.coverage_at(0.8) == 0.5
    assert r.precision_at(0.6) == 0.75


def test_threshold_for_keeps_ties_together_and_may_find_none():
    r = report_with([1.0, 1.0, 0.5], [True, False, True])
    assert r.threshold_for(0.6) == 0.5  # the two 1.0s cannot be split: 1 of 2 right above 0.5
    assert r.threshold_for(0.5) == 0.5
    assert r.threshold_for(0.7) is None
    assert report_with([], []).threshold_for(0.9) is None


def test_two_clean_classes_score_perfectly_with_few_queries_and_classes():
    # 6 queries, 2 classes: DINO's loop would divide by zero and fail its top-5.
    rng = np.random.default_rng(0)
    a = unit([[1, 0, 0] + 0.05 * rng.standard_normal(3) for _ in range(3)])
    b = unit([[0, 1, 0] + 0.05 * rng.standard_normal(3) for _ in range(3)])
    r = evaluate_vectors(np.vstack([a, b]), ["a"] * 3 + ["b"] * 3, k=20)
    assert (r.top1, r.top5, r.mean_ap) == (1.0, 1.0, 1.0)
    assert r.precision_at_10 == pytest.approx(2 / 5)  # 2 of the 5 other images share the class
    assert r.confusion == {"a": {"a": 3}, "b": {"b": 3}}
    assert r.per_class["a"] == {"precision": 1.0, "recall": 1.0, "support": 3}
    assert r.threshold_for(0.95) is not None


def test_a_misplaced_image_is_counted_wrong_and_leaves_itself_out():
    # Image 4 is labelled "a" but sits among the "b"s; its own vector must not vote for it.
    vectors = unit([[1, 0], [1, 0.1], [1, -0.1], [0.3, 1], [0, 1], [0.02, 1]])
    r = evaluate_vectors(vectors, ["a", "a", "a", "a", "b", "b"], k=2, temperature=0.07)
    assert r.confusion["a"] == {"a": 3, "b": 1}
    assert r.top1 == pytest.approx(5 / 6)
    assert r.per_class["b"]["precision"] == pytest.approx(2 / 3)
    assert r.per_class["a"]["recall"] == pytest.approx(3 / 4)


def test_duplicate_vectors_under_different_labels_do_not_count_the_query(vector_library):
    # Two identical vectors: leave-one-out must drop the query by position, not by score.
    vectors = unit([[1, 0], [1, 0], [0, 1], [0, 1]])
    r = evaluate_vectors(vectors, ["x", "y", "y", "y"], k=1)
    assert r.confusion["x"] == {"y": 1}


def test_too_few_labels_raise(vector_library):
    library = vector_library(unit([[1, 0], [0, 1]]))
    with pytest.raises(EvalError):
        evaluate(library)


def test_evaluate_on_the_labelled_sample_photos(labelled_samples):
    r = evaluate(labelled_samples, k=20, temperature=0.07)
    d = r.to_dict()
    assert d["images"] == 120 and d["classes"] == 10 and d["k"] == 20 and d["temperature"] == 0.07
    # Real ImageNet features separate these classes far better than chance (0.1); measured 0.73.
    assert d["top1"] >= 0.65
    assert d["top5"] >= d["top1"]
    assert 0.3 < d["precision_at_10"] <= 1 and 0 < d["mean_ap"] <= 1
    assert sum(sum(row.values()) for row in d["confusion"].values()) == 120
    assert {c["support"] for c in d["per_class"].values()} == {12}
    # Confident suggestions on these photos are right far more often than the 73% average.
    t = r.threshold_for(0.9)
    assert t is not None and 0 < r.coverage_at(t) < 1
    assert d["confidence_thresholds"]["0.9"]["precision"] >= 0.9


def test_evaluate_with_labels_given_ignores_the_library_labels(labelled_samples):
    from sqlalchemy import select

    from indexer.schema import Image

    with labelled_samples.Session() as s:
        ids = s.scalars(select(Image.id).order_by(Image.id)).all()
    fake = {i: ("even" if i % 2 else "odd") for i in ids}
    r = evaluate(labelled_samples, labels=fake)
    assert r.class_names == ["even", "odd"]
    assert 0.3 < r.top1 < 0.7  # parity says nothing about photos

