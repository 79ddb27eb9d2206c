"""Split-conformal coverage on synthetic data where the truth is known.

The guarantee tested (Angelopoulos & Bates 2021, "A Gentle Introduction to Conformal Prediction and
Distribution-Free Uncertainty Quantification", section 1, Theorem 1): with n exchangeable calibration points and
q the ceil((n+1)(1-alpha))/n empirical quantile of the scores, P(Y in C(X)) >= 1 - alpha, and (continuous scores)
<= 1 - alpha + 1/(n+1). Averaged over T independent trials, the observed coverage has standard deviation about
sqrt((alpha(1-alpha)/(n+2) + alpha(1-alpha)/m) / T) (a Beta over calibration draws plus the binomial of m test
points), so the tests allow three of those.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.ensemble.conformal import calibrate_conformal, conformal_quantile, prediction_sets

ALPHA = 0.1
N_CAL, N_TEST, TRIALS, K = 200, 500, 200, 3


def _draw(rng: np.random.Generator, n: int, hard_share: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Items with a known P(y|x); the model sees a noisier, overconfident version. Hard items are noisier still."""
    logits = rng.normal(0, 2.0, size=(n, K))
    true_p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(K, p=row) for row in true_p])
    hard = rng.random(n) < hard_share
    noise = rng.normal(0, 1.0, size=(n, K)) + hard[:, None] * rng.normal(0, 4.0, size=(n, K))
    model_logits = 1.5 * logits + noise
    proba = np.exp(model_logits) / np.exp(model_logits).sum(axis=1, keepdims=True)
    return proba, y, hard


def _covered(proba: np.ndarray, y: np.ndarray, sets: list[tuple[int, ...]]) -> np.ndarray:
    return np.array([y[i] in s for i, s in enumerate(sets)])


def _tolerance() -> float:
    var = ALPHA * (1 - ALPHA) / (N_CAL + 2) + ALPHA * (1 - ALPHA) / N_TEST
    return 3 * math.sqrt(var / TRIALS)


def test_quantile_rank_and_infinite_threshold() -> None:
    scores = np.arange(1, 11) / 10  # 0.1 .. 1.0
    # ceil(11 * 0.9) = 10th smallest
    assert conformal_quantile(scores, 0.1) == pytest.approx(1.0)
    # ceil(11 * 0.8) = 9th smallest
    assert conformal_quantile(scores, 0.2) == pytest.approx(0.9)
    # n = 5, alpha 0.1: rank ceil(6 * 0.9) = 6 > 5, so no finite threshold is valid.
    assert conformal_quantile(scores[:5], 0.1) == math.inf
    assert conformal_quantile([], 0.1) == math.inf


@pytest.mark.slow
def test_marginal_coverage_holds_over_many_seeds_and_fails_without_conformal() -> None:
    with_conformal, top1_only = [], []
    for seed in range(TRIALS):
        rng = np.random.default_rng(seed)
        cal_p, cal_y, _ = _draw(rng, N_CAL)
        test_p, test_y, _ = _draw(rng, N_TEST)
        thresholds = calibrate_conformal(cal_p, cal_y, ALPHA)
        with_conformal.append(_covered(test_p, test_y, prediction_sets(test_p, thresholds)).mean())
        # Mechanism switched off: answer the argmax alone.
        top1_only.append((test_p.argmax(axis=1) == test_y).mean())
    coverage = float(np.mean(with_conformal))
    assert coverage >= 1 - ALPHA - _tolerance()
    assert coverage <= 1 - ALPHA + 1 / (N_CAL + 1) + _tolerance()
    assert float(np.mean(top1_only)) < 1 - ALPHA - _tolerance()


@pytest.mark.slow
def test_per_slice_thresholds_cover_a_hard_slice_that_the_global_threshold_misses() -> None:
    per_slice, global_only = [], []
    for seed in range(TRIALS // 2):
        rng = np.random.default_rng(10_000 + seed)
        cal_p, cal_y, cal_hard = _draw(rng, 4 * N_CAL, hard_share=0.15)
        test_p, test_y, test_hard = _draw(rng, 4 * N_TEST, hard_share=0.15)
        cal_slices = [("hard",) if h else () for h in cal_hard]
        test_slices = [("hard",) if h else () for h in test_hard]
        sliced = calibrate_conformal(cal_p, cal_y, ALPHA, cal_slices, ["hard"], min_slice_items=30)
        flat = calibrate_conformal(cal_p, cal_y, ALPHA)
        hard = np.flatnonzero(test_hard)
        per_slice.append(_covered(test_p, test_y, prediction_sets(test_p, sliced, test_slices))[hard].mean())
        global_only.append(_covered(test_p, test_y, prediction_sets(test_p, flat, test_slices))[hard].mean())
    # The hard slice has ~120 calibration items per trial; allow for its smaller size.
    tolerance = 3 * math.sqrt((ALPHA * (1 - ALPHA) / 120 + ALPHA * (1 - ALPHA) / 300) / (TRIALS // 2))
    assert float(np.mean(per_slice)) >= 1 - ALPHA - tolerance
    assert float(np.mean(global_only)) < 1 - ALPHA - tolerance


def test_item_uses_the_largest_threshold_of_its_slices() -> None:
    proba = np.array([[0.9, 0.1]] * 40 + [[0.6, 0.4]] * 40)
    y = np.array([0] * 40 + [1] * 4 + [0] * 36)
    slices = [("easy",)] * 40 + [("hard",)] * 40
    thresholds = calibrate_conformal(proba, y, 0.2, slices, ["easy", "hard", "tiny"], min_slice_items=30)
    assert thresholds.slice_counts == {"easy": 40, "hard": 40, "tiny": 0}
    assert "tiny" not in thresholds.slice_thresholds
    assert thresholds.threshold_for(("easy", "hard")) == max(thresholds.slice_thresholds.values())
    assert thresholds.threshold_for(()) == thresholds.global_threshold
