"""The keep rule's paired test (indexer/finetune/_paired.py) on differences whose answer is known."""

from __future__ import annotations

import math

import numpy as np

from indexer.finetune._paired import EXACT_UP_TO, calibrated, label_log_likelihood, sign_flip_p_value


def test_all_positive_differences_have_the_smallest_exact_p_value():
    # 10 photos all better: only the observed signs (1 of 2^10) reach the observed mean.
    assert sign_flip_p_value(np.linspace(0.1, 1.0, 10)) == 1 / 2**10


def test_no_difference_or_no_photos_measure_nothing():
    assert sign_flip_p_value(np.zeros(12)) == 1.0
    assert sign_flip_p_value([]) == 1.0


def test_one_large_loss_outweighs_many_small_gains():
    # A tune that makes 9 photos a little surer and one photo confidently wrong is no better.
    d = np.r_[np.full(9, 0.05), -3.0]
    assert sign_flip_p_value(d) > 0.5


def test_equal_magnitudes_give_the_sign_test_exact_binomial_tail():
    # With |d| all equal the sign-flip test is the sign test: P(Binomial(n, 1/2) >= wins).
    n, wins = 14, 11
    d = np.r_[np.ones(wins), -np.ones(n - wins)]
    tail = sum(math.comb(n, k) for k in range(wins, n + 1)) / 2**n
    assert math.isclose(sign_flip_p_value(d), tail)


def test_monte_carlo_beyond_the_exact_size_agrees_with_the_binomial_tail():
    n, wins = EXACT_UP_TO + 24, 28  # 40 photos, 28 better
    d = np.r_[np.ones(wins), -np.ones(n - wins)]
    tail = sum(math.comb(n, k) for k in range(wins, n + 1)) / 2**n  # 0.0083
    assert abs(sign_flip_p_value(d) - tail) < 0.004
    assert sign_flip_p_value(d, seed=1) == sign_flip_p_value(d, seed=1)  # seeded: the same answer twice


def test_label_log_likelihood_is_log_softmax_at_the_label():
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    got = label_log_likelihood(logits, np.array([0, 2]))
    assert np.allclose(got, [2 - math.log(math.e**2 + 2), -math.log(3)])


def test_calibrated_picks_the_temperature_that_fits_and_ignores_the_logits_scale():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1, (40, 3)).astype(np.float32)
    codes = rng.integers(0, 3, 40)
    assert np.allclose(calibrated(logits, codes), calibrated(10 * logits, codes), atol=0.02)
    assert calibrated(logits, codes).sum() >= label_log_likelihood(logits, codes).sum()
