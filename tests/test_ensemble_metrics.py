"""Ensemble metrics against published worked examples, plus the risk-coverage curve and slices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.ensemble.metrics import (
    brier_score,
    calibration_report,
    latency_summary,
    plot_reliability_diagram,
    risk_coverage_curve,
    slice_report,
)


def test_ece_matches_pavlovic_worked_example() -> None:
    # M. Pavlovic, "Expected Calibration Error (ECE): a step-by-step visual explanation", Towards Data Science,
    # July 2023, binary example (9 samples, M = 3 bins, confidence = the sample's probability, prediction p > 0.5):
    # ECE = 0.23778.
    samples = np.array([0.22, 0.64, 0.92, 0.42, 0.51, 0.15, 0.70, 0.37, 0.83])
    labels = np.array([0, 1, 0, 0, 0, 1, 1, 0, 1])
    correct = (samples > 0.5).astype(int) == labels
    report = calibration_report(samples, correct, n_bins=3)
    assert report.ece == pytest.approx(0.23778, abs=5e-5)
    assert [b.count for b in report.bins] == [2, 4, 3]


def test_brier_matches_scikit_learn_docs_example() -> None:
    # scikit-learn documentation of brier_score_loss: y_true [0, 1, 1, 0], y_prob [0.1, 0.9, 0.8, 0.3] -> 0.0375
    # (positive column only). Brier's (1950) score sums over both columns: twice that, 0.0750.
    p1 = np.array([0.1, 0.9, 0.8, 0.3])
    proba = np.column_stack([1 - p1, p1])
    assert brier_score(proba, np.array([0, 1, 1, 0])) == pytest.approx(0.0750, abs=5e-5)


def test_risk_coverage_curve_answers_most_confident_first_and_groups_ties() -> None:
    curve = risk_coverage_curve([0.99, 0.95, 0.95, 0.6, 0.55], [True, True, False, True, False])
    assert curve.coverage.tolist() == pytest.approx([0.2, 0.6, 0.8, 1.0])
    assert curve.risk.tolist() == pytest.approx([0.0, 1 / 3, 0.25, 0.4])
    assert curve.coverage_at_risk(0.0) == pytest.approx(0.2)
    assert curve.coverage_at_risk(0.3) == pytest.approx(0.8)


def test_slice_report_finds_the_worst_slice() -> None:
    y = ["a", "b", "a", "b", "a", "b"]
    pred = ["a", "b", "a", "a", "a", "a"]
    slices = [("x",), ("x",), ("y",), ("y",), ("y",), ("y",)]
    report = slice_report(y, pred, slices, ["x", "y", "z"], ["a", "b"], min_items=2)
    assert report.worst is not None and report.worst.name == "y"
    assert {s.name: s.n for s in report.slices} == {"x": 2, "y": 4, "z": 0}


def test_reliability_diagram_is_a_png(tmp_path: Path) -> None:
    report = calibration_report([0.9, 0.8, 0.6, 0.95], [True, False, True, True], n_bins=5)
    path = plot_reliability_diagram(report, tmp_path / "r.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_latency_percentiles_in_ms() -> None:
    summary = latency_summary([0.001] * 19 + [0.1])
    assert summary.p50_ms == pytest.approx(1.0)
    assert summary.max_ms == pytest.approx(100.0)
