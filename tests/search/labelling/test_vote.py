"""The weighted vote on hand-made scores: DINO's exp(sim / T) rule and its edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from search.labelling.vote import vote


def test_each_neighbour_votes_exp_score_over_temperature():
    v = vote([0.9, 0.8, 0.7], ["cat", "dog", "cat"], temperature=0.1)
    cat = math.exp(9) + math.exp(7)
    dog = math.exp(8)
    assert v.label == "cat"
    assert v.confidence == pytest.approx(cat / (cat + dog))
    assert v.margin == pytest.approx((cat - dog) / (cat + dog))
    assert list(v.tally) == ["cat", "dog"]
    assert sum(v.tally.values()) == pytest.approx(1.0)


def test_a_nearer_neighbour_outweighs_several_farther_ones_at_low_temperature():
    scores, labels = [0.95, 0.80, 0.79, 0.78], ["cat", "dog", "dog", "dog"]
    assert vote(scores, labels, temperature=0.02).label == "cat"
    assert vote(scores, labels, temperature=1.0).label == "dog"  # nearly one neighbour, one vote


def test_unlabelled_neighbours_do_not_vote():
    v = vote([0.99, 0.98, 0.5], [None, None, "dog"])
    assert v.label == "dog"
    assert v.confidence == 1.0
    assert v.tally == {"dog": 1.0}


def test_a_tie_goes_to_the_nearest_voter_with_zero_margin():
    v = vote([0.9, 0.9], ["b", "a"])
    assert v.label == "b"
    assert v.margin == 0.0
    assert v.confidence == pytest.approx(0.5)
    assert vote([0.9, 0.9], ["a", "b"]).label == "a"


def test_fewer_neighbours_than_k_still_vote():
    v = vote([0.7], ["shoe"])
    assert (v.label, v.confidence, v.margin) == ("shoe", 1.0, 1.0)


def test_a_single_class_has_full_confidence_and_margin():
    v = vote(np.linspace(0.9, 0.5, 20), ["hat"] * 20)
    assert (v.label, v.confidence, v.margin) == ("hat", 1.0, 1.0)


def test_nothing_labelled_gives_no_label():
    v = vote([0.9, 0.8], [None, None])
    assert (v.label, v.confidence, v.margin, v.tally) == (None, 0.0, 0.0, {})
    assert vote([], []).label is None


def test_the_query_itself_and_faiss_padding_are_skipped():
    flt_max = np.finfo(np.float32).max
    v = vote(
        [1.0, 0.6, -flt_max, 0.5],
        ["cat", "dog", "cat", "dog"],
        ids=[7, 3, -1, 4],
        query_id=7,
    )
    assert v.label == "dog"
    assert v.tally == {"dog": 1.0}


def test_scores_near_one_do_not_overflow():
    v = vote([1.0] * 20, ["a"] * 10 + ["b"] * 10, temperature=0.001)
    assert math.isfinite(v.confidence) and v.confidence == pytest.approx(0.5)


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        vote([0.5], ["a"], temperature=0)
    with pytest.raises(ValueError):
        vote([0.5, 0.4], ["a"])
