"""Quality, calibration, selective-prediction and cost figures of an ensemble run.

Macro F1 comes from :mod:`pipeline.stats.metrics`; what that module lacks (per-slice F1, ECE with its
reliability diagram, Brier, the risk-coverage curve, latency percentiles) is written here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.stats.metrics import per_label_report

__all__ = [
    "CalibrationBin",
    "CalibrationReport",
    "LatencySummary",
    "RiskCoverageCurve",
    "SliceF1",
    "SliceReport",
    "brier_score",
    "calibration_report",
    "expected_calibration_error",
    "label_indices",
    "latency_summary",
    "macro_f1",
    "plot_reliability_diagram",
    "risk_coverage_curve",
    "slice_label_support",
    "slice_report",
    "worst_supported_slice",
]


def macro_f1(y_true: Sequence[str], y_pred: Sequence[str | None], labels: Sequence[str]) -> float:
    """Unweighted mean of per-label F1 (a None prediction counts as wrong)."""
    return per_label_report(list(y_true), list(y_pred), list(labels)).macro_f1


@dataclass(frozen=True)
class SliceF1:
    """Macro F1 on one slice."""

    name: str
    n: int
    macro_f1: float


@dataclass(frozen=True)
class SliceReport:
    """Macro F1 per slice and the worst of them."""

    slices: tuple[SliceF1, ...]
    worst: SliceF1 | None
    """The slice with the lowest F1 among those with at least ``min_items`` items (None if none has)."""


def slice_report(
    y_true: Sequence[str],
    y_pred: Sequence[str | None],
    item_slices: Sequence[Sequence[str]],
    slice_names: Sequence[str],
    labels: Sequence[str],
    min_items: int = 20,
) -> SliceReport:
    """Macro F1 on each named slice (items may be in several); the worst over slices with ``min_items`` items.

    A slice in which only one label occurs scores F1 over the labels present, not all of ``labels``: an absent
    label's F1 of 0 would make every one-sided slice look broken.
    """
    results: list[SliceF1] = []
    for name in slice_names:
        idx = [i for i, names in enumerate(item_slices) if name in names]
        if not idx:
            results.append(SliceF1(name, 0, float("nan")))
            continue
        truth = [y_true[i] for i in idx]
        present = [label for label in labels if label in truth]
        preds = [y_pred[i] if y_pred[i] in present else None for i in idx]
        results.append(SliceF1(name, len(idx), per_label_report(truth, preds, present).macro_f1))
    eligible = [r for r in results if r.n >= min_items]
    worst = min(eligible, key=lambda r: r.macro_f1) if eligible else None
    return SliceReport(tuple(results), worst)


def slice_label_support(
    y_true: Sequence[str], item_slices: Sequence[Sequence[str]], slice_names: Sequence[str], labels: Sequence[str]
) -> dict[str, dict[str, int]]:
    """Per slice, how many gold items of each label it holds."""
    return {
        name: {
            label: sum(1 for i, names in enumerate(item_slices) if name in names and y_true[i] == label)
            for label in labels
        }
        for name in slice_names
    }


def worst_supported_slice(
    report: SliceReport, support: Mapping[str, Mapping[str, int]], min_label_support: int, min_items: int = 20
) -> SliceF1 | None:
    """The worst slice among those with ``min_items`` items and ``min_label_support`` gold items of every label.

    A slice holding three items of a label scores that label's F1 on three items: one mistake moves the macro F1
    by ~0.2. Reported next to the unrestricted worst slice, not instead of it.
    """
    eligible = [
        s
        for s in report.slices
        if s.n >= min_items and support.get(s.name) and min(support[s.name].values()) >= min_label_support
    ]
    return min(eligible, key=lambda s: s.macro_f1) if eligible else None


@dataclass(frozen=True)
class CalibrationBin:
    """One equal-width confidence bin of a reliability diagram."""

    lower: float
    upper: float
    count: int
    mean_confidence: float
    accuracy: float


@dataclass(frozen=True)
class CalibrationReport:
    """ECE and the bins it was computed from."""

    ece: float
    bins: tuple[CalibrationBin, ...]
    n: int


def calibration_report(
    confidence: Sequence[float] | np.ndarray, correct: Sequence[bool] | np.ndarray, n_bins: int = 15
) -> CalibrationReport:
    """Expected calibration error (Guo et al. 2017, eq. 3) over ``n_bins`` equal-width bins.

    ECE = sum over bins of |B|/n * |accuracy(B) - mean confidence(B)|. Bins are (lower, upper]; the first also
    holds a confidence of exactly 0. ``confidence`` is the probability the model gave its predicted label.
    """
    conf = np.asarray(confidence, dtype=float)
    hit = np.asarray(correct, dtype=float)
    if conf.shape != hit.shape or conf.ndim != 1:
        raise ValueError(f"confidence {conf.shape} and correct {hit.shape} must be 1-D of equal length")
    if conf.size == 0:
        raise ValueError("no predictions: ECE of zero items is undefined; score at least one item")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # right=True puts c in bin b when edges[b] < c <= edges[b+1]; 0.0 goes to the first bin.
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    bins: list[CalibrationBin] = []
    ece = 0.0
    for b in range(n_bins):
        mask = which == b
        count = int(mask.sum())
        if count == 0:
            bins.append(CalibrationBin(float(edges[b]), float(edges[b + 1]), 0, float("nan"), float("nan")))
            continue
        mean_conf, acc = float(conf[mask].mean()), float(hit[mask].mean())
        ece += count / conf.size * abs(acc - mean_conf)
        bins.append(CalibrationBin(float(edges[b]), float(edges[b + 1]), count, mean_conf, acc))
    return CalibrationReport(ece, tuple(bins), int(conf.size))


def expected_calibration_error(proba: np.ndarray, y_true_index: Sequence[int] | np.ndarray, n_bins: int = 15) -> float:
    """ECE of top-label probabilities ``proba`` (n, k) against true label indices."""
    truth = np.asarray(y_true_index)
    return calibration_report(proba.max(axis=1), proba.argmax(axis=1) == truth, n_bins).ece


def brier_score(proba: np.ndarray, y_true_index: Sequence[int] | np.ndarray) -> float:
    """Brier's (1950) multi-category score: mean over items of sum over labels of (p - 1[true])^2 (0 is best, 2 worst).

    For two labels this is twice scikit-learn's ``brier_score_loss``, which scores the positive column only.
    """
    truth = np.asarray(y_true_index)
    onehot = np.zeros_like(proba, dtype=float)
    onehot[np.arange(len(truth)), truth] = 1.0
    return float(((proba - onehot) ** 2).sum(axis=1).mean())


def plot_reliability_diagram(report: CalibrationReport, path: str | Path, title: str = "Reliability") -> Path:
    """Write a reliability diagram (accuracy vs confidence per bin, with counts) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    filled = [b for b in report.bins if b.count]
    width = report.bins[0].upper - report.bins[0].lower
    ax.bar(
        [b.lower for b in filled],
        [b.accuracy for b in filled],
        width=width,
        align="edge",
        alpha=0.7,
        edgecolor="black",
        label="accuracy",
    )
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(f"{title} (ECE {report.ece:.4f}, n={report.n})")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(target, dpi=100)
    plt.close(fig)
    return target


@dataclass(frozen=True)
class RiskCoverageCurve:
    """Selective error at each coverage when the most confident items are answered first."""

    coverage: np.ndarray
    """Share of items answered, ascending (1/n ... 1)."""
    risk: np.ndarray
    """Error rate among the answered items at that coverage."""
    threshold: np.ndarray
    """Confidence of the last item answered at that coverage."""

    def coverage_at_risk(self, max_risk: float) -> float:
        """The largest coverage whose selective error is at most ``max_risk`` (0.0 if none)."""
        ok = self.risk <= max_risk + 1e-12
        return float(self.coverage[ok].max()) if ok.any() else 0.0

    def area(self) -> float:
        """Area under the risk-coverage curve (AURC; lower is better)."""
        return float(self.risk.mean())


def risk_coverage_curve(
    confidence: Sequence[float] | np.ndarray, correct: Sequence[bool] | np.ndarray
) -> RiskCoverageCurve:
    """Risk-coverage curve (Geifman & El-Yaniv 2017): sort by confidence, descending, and accumulate errors.

    Ties in confidence are answered together (a threshold cannot split them), so each tied group's last point
    stands for all of its members.
    """
    conf = np.asarray(confidence, dtype=float)
    hit = np.asarray(correct, dtype=bool)
    if conf.size == 0:
        raise ValueError("no predictions: a risk-coverage curve needs at least one item")
    order = np.argsort(-conf, kind="stable")
    errors = np.cumsum(~hit[order])
    n = np.arange(1, conf.size + 1)
    sorted_conf = conf[order]
    # Keep only the last position of each tie group.
    last_of_group = np.append(sorted_conf[1:] != sorted_conf[:-1], True)
    return RiskCoverageCurve(
        coverage=(n / conf.size)[last_of_group],
        risk=(errors / n)[last_of_group],
        threshold=sorted_conf[last_of_group],
    )


@dataclass(frozen=True)
class LatencySummary:
    """Per-prediction latency percentiles, in milliseconds."""

    n: int
    p50_ms: float
    p95_ms: float
    max_ms: float


def latency_summary(seconds: Sequence[float] | np.ndarray) -> LatencySummary:
    """p50, p95 and max of per-prediction latencies given in seconds."""
    values = np.asarray(seconds, dtype=float) * 1000.0
    if values.size == 0:
        raise ValueError("no latencies measured; time at least one prediction")
    return LatencySummary(
        int(values.size), float(np.percentile(values, 50)), float(np.percentile(values, 95)), float(values.max())
    )


def label_indices(labels: Sequence[str], y: Sequence[str]) -> np.ndarray:
    """Indices of ``y`` in ``labels`` (ValueError naming an unknown label)."""
    index: Mapping[str, int] = {label: i for i, label in enumerate(labels)}
    unknown = sorted({v for v in y if v not in index})
    if unknown:
        raise ValueError(f"labels {unknown} are not among the task's labels {list(labels)}; fix the data or the task")
    return np.array([index[v] for v in y], dtype=np.int64)
