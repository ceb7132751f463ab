"""search/tune_decision.py's folds and keep rule on scores whose answer is known (the training and
scoring themselves run on real photos in tests/search/test_tuning.py)."""

from __future__ import annotations

import numpy as np

from indexer.finetune import CandidateScore, pooled
from search.tune_decision import keep, scoring_folds, stratified_folds


def test_folds_deal_every_class_across_both_folds_and_balance_their_sizes():
    codes = np.repeat(np.arange(5), 3)  # 3 labels a class, 5 classes
    folds = stratified_folds(codes, 2, np.random.default_rng(0))
    assert sorted(np.concatenate(folds).tolist()) == list(range(15))
    assert sorted(len(f) for f in folds) == [7, 8]
    for f in folds:
        assert set(codes[f].tolist()) == set(range(5))  # each fold scores every class


def test_few_labels_are_dealt_into_4_folds_and_every_candidate_still_trains_on_every_class():
    codes = np.repeat(np.arange(10), 3)  # the fewest `tune` accepts: 3 labels a class
    assert scoring_folds(codes) == 4
    folds = stratified_folds(codes, scoring_folds(codes), np.random.default_rng(0))
    assert sorted(np.concatenate(folds).tolist()) == list(range(30))
    assert sorted(len(f) for f in folds) == [7, 7, 8, 8]
    for f in folds:
        train = np.setdiff1d(np.arange(30), f)
        assert np.bincount(codes[train], minlength=10).min() >= 2  # a candidate sees 2 of each class's 3


def test_many_labels_take_2_folds_unless_the_classes_each_have_few():
    assert scoring_folds(np.repeat(np.arange(10), 100)) == 2  # 1,000 labels, 100 a class
    assert scoring_folds(np.repeat(np.arange(10), 13)) == 2  # 130 labels, 13 a class
    # 17 classes of 8 labels are 136: a candidate on half of them would see 4 a class
    assert scoring_folds(np.repeat(np.arange(17), 8)) == 4
    # one big class does not hide that the others have few
    assert scoring_folds(np.concatenate([np.zeros(500, np.int64), np.repeat(np.arange(1, 10), 5)])) == 4
    assert scoring_folds(np.repeat(np.arange(2), 18)) == 4  # 36 labels: 4 folds are cheap


def score(frozen_margin, tuned_margin) -> CandidateScore:
    """Two classes, every photo's label 0: a probe's logits are [margin, 0] (right when margin > 0)."""
    f, t = np.asarray(frozen_margin, float), np.asarray(tuned_margin, float)
    n = len(f)

    def logits(m):
        return np.stack([m, np.zeros(n)], axis=1).astype(np.float32)

    return CandidateScore(float(np.mean(f > 0)), float(np.mean(t > 0)), n, n, logits(f), logits(t),
                          np.zeros(n, np.int64))


MARGINS = np.random.default_rng(0).normal(1.0, 1.5, 30)  # the frozen probe: right on about 3 photos of 4


NOISE = np.random.default_rng(1).normal(0.0, 1.0, 30)


def test_a_clear_paired_win_is_kept():
    clear = score(MARGINS, MARGINS + 1.5)
    assert clear.gain > 0 and clear.loglik_gain > 0.3 and clear.p_value < 0.01 and keep(clear)


def test_a_win_measured_but_not_significant_is_kept_and_its_p_value_says_how_sure():
    # Two photos more right of 30, each label a little likelier on the whole, noisily: the situation
    # of 8 labels a class on clothing_small, whose refit weights gained 3 to 5 points on the rest.
    slight = score(MARGINS, np.where(MARGINS > 0, MARGINS + 0.25, MARGINS) + 0.6 * NOISE)
    assert slight.gain > 0 and 0 < slight.loglik_gain < 0.1 and 0.1 < slight.p_value < 0.5
    assert keep(slight)


def test_equal_accuracy_with_labels_less_likely_is_not_kept():
    # The same photos right and wrong, but the right ones pushed towards the boundary, unevenly.
    shrunk = np.where(MARGINS > 0, np.maximum(MARGINS - np.abs(NOISE), 0.05), MARGINS - np.abs(NOISE))
    less_sure = score(MARGINS, shrunk)
    assert less_sure.gain == 0 and less_sure.loglik_gain < 0 and less_sure.p_value > 0.9
    assert not keep(less_sure)


def test_a_probe_that_is_only_surer_is_no_better():
    # Logits three times larger, the same ranking: the calibrated log-likelihoods are the same.
    surer = score(MARGINS, 3 * MARGINS)
    assert surer.gain == 0 and np.allclose(surer.tuned_loglik, surer.frozen_loglik, atol=1e-6)
    assert surer.loglik_gain == 0 and surer.p_value == 1.0 and not keep(surer)


def test_the_rule_reads_the_log_likelihood_not_the_count_of_right_and_wrong():
    # Fewer photos right, but every label likelier on the whole: the photos it loses were near the
    # boundary and stay near it, the ones it keeps become sure. Kept (the accuracies are shown).
    likelier = score(MARGINS, np.where(MARGINS > 0.2, MARGINS + 3, -0.1))
    assert likelier.gain < 0 and likelier.loglik_gain > 0 and likelier.p_value < 0.05 and keep(likelier)
    # More photos right, but the labels less likely on the whole: a few flipped across the boundary,
    # the others pushed towards it or surely wrong. Not kept.
    flipped = np.where((MARGINS > -0.3) & (MARGINS <= 0), 0.05, np.where(MARGINS > 0, MARGINS * 0.3, MARGINS - 2))
    luckier = score(MARGINS, flipped)
    assert luckier.gain > 0 and luckier.loglik_gain < 0 and not keep(luckier)


def test_pooled_folds_count_each_photo_once():
    a = score([1.0, -1.0], [1.0, 1.0])
    b = score([1.0, 1.0, 1.0, -1.0], [2.0, 2.0, 2.0, 2.0])
    both = pooled([a, b])
    assert both.n_heldout == 6 and both.frozen_accuracy == 4 / 6 and both.tuned_accuracy == 1.0
    assert both.tuned_logits.shape == (6, 2) and len(both.tuned_loglik) == 6


def test_the_kept_weights_are_half_the_refit_and_half_the_mean_of_the_candidates():
    import torch

    from search.tune_decision import SOUP_REFIT_SHARE, soup

    assert SOUP_REFIT_SHARE == 0.5
    refit = {"w": torch.full((2, 3), 4.0), "bn.num_batches_tracked": torch.tensor(7)}
    candidates = [{"w": torch.zeros(2, 3), "bn.num_batches_tracked": torch.tensor(1)},
                  {"w": torch.full((2, 3), 2.0), "bn.num_batches_tracked": torch.tensor(2)}]
    mixed = soup(refit, candidates)
    assert torch.equal(mixed["w"], torch.full((2, 3), 2.5))  # 0.5 * 4 + 0.25 * 0 + 0.25 * 2
    assert mixed["w"].dtype == torch.float32
    assert int(mixed["bn.num_batches_tracked"]) == 7  # counters are the refit's, never averaged
    assert torch.equal(refit["w"], torch.full((2, 3), 4.0))  # the refit's own tensors are untouched
    assert soup(refit, []) is refit  # no candidate trained: the refit alone
