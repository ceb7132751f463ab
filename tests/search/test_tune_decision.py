"""search/tune_decision.py's folds and keep rule on scores whose answer is known (the training and
scoring themselves run on real photos in tests/search/test_tuning.py)."""

from __future__ import annotations

import numpy as np

from indexer.finetune import CandidateScore, pooled
from search.tune_decision import keep, stratified_folds


def test_folds_deal_every_class_across_both_folds_and_balance_their_sizes():
    codes = np.repeat(np.arange(5), 3)  # 3 labels a class, 5 classes
    folds = stratified_folds(codes, 2, np.random.default_rng(0))
    assert sorted(np.concatenate(folds).tolist()) == list(range(15))
    assert sorted(len(f) for f in folds) == [7, 8]
    for f in folds:
        assert set(codes[f].tolist()) == set(range(5))  # each fold scores every class


def score(frozen_ok, tuned_ok, d) -> CandidateScore:
    n = len(d)
    return CandidateScore(float(np.mean(frozen_ok)), float(np.mean(tuned_ok)), n, n, np.zeros(n), np.asarray(d, float))


def test_a_clear_paired_win_is_kept_and_a_coin_toss_is_not():
    clear = score([1] * 14 + [0] * 6, [1] * 18 + [0] * 2, np.r_[np.full(17, 0.3), -0.1, -0.1, -0.1])
    assert clear.p_value < 0.01 and keep(clear)
    toss = score([1] * 10 + [0] * 10, [1] * 11 + [0] * 9, np.tile([0.3, -0.3], 10))
    assert toss.gain > 0 and not keep(toss)


def test_a_tune_measured_worse_in_accuracy_is_not_kept_however_sure():
    surer_but_wrong = score([1] * 16 + [0] * 4, [1] * 15 + [0] * 5, np.full(20, 0.2))
    assert surer_but_wrong.p_value < 0.001 and not keep(surer_but_wrong)


def test_pooled_folds_count_each_photo_once():
    a = score([1, 0], [1, 1], [0.5, 0.5])
    b = score([1, 1, 1, 0], [1, 1, 1, 1], [0.1, 0.2, 0.3, 0.4])
    both = pooled([a, b])
    assert both.n_heldout == 6 and both.frozen_accuracy == 4 / 6 and both.tuned_accuracy == 1.0
    assert len(both.tuned_loglik) == 6
