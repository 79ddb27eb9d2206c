"""Classification metrics and the confusion-matrix plot, against published worked examples."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.report.plots import plot_confusion_matrix
from pipeline.stats.metrics import (
    INVALID,
    ConfusionMatrix,
    accuracy_with_ci,
    cohens_kappa,
    confusion_matrix,
    per_label_report,
)


def _from_table(labels: list[str], table: list[list[int]]) -> tuple[list[str], list[str]]:
    """Expand a contingency table (rows = rater 1 / truth, cols = rater 2 / prediction) into items."""
    y_true: list[str] = []
    y_pred: list[str] = []
    for i, row in enumerate(table):
        for j, count in enumerate(row):
            y_true += [labels[i]] * count
            y_pred += [labels[j]] * count
    return y_true, y_pred


# Altman (1991), Practical Statistics for Medical Research, pp. 403-405: two radiologists classify
# 85 xeromammograms (Boyd et al. 1982); rows radiologist A, columns radiologist B.
XERO_LABELS = ["normal", "benign", "suspect", "cancer"]
XERO_TABLE = [
    [21, 12, 0, 0],
    [4, 17, 1, 0],
    [3, 9, 15, 2],
    [0, 0, 0, 1],
]


# --- accuracy -------------------------------------------------------------------------------------


def test_accuracy_ci_is_newcombe_wilson_interval() -> None:
    """Newcombe (1998), Stat Med 17:857-872, Table I (p. 861), 81/263, score method: 0.2553-0.3662.

    263 items, 81 right; of the 182 wrong, 40 are invalid (None) answers, which must count as wrong.
    """
    y_true = ["yes"] * 263
    y_pred: list[str | None] = ["yes"] * 81 + ["no"] * 142 + [None] * 40
    ci = accuracy_with_ci(y_true, y_pred)
    assert ci.estimate == pytest.approx(81 / 263)
    assert (round(ci.low, 4), round(ci.high, 4)) == (0.2553, 0.3662)
    assert ci.method == "wilson"


def test_accuracy_errors() -> None:
    with pytest.raises(ValueError, match="empty"):
        accuracy_with_ci([], [])
    with pytest.raises(ValueError, match=r"2 items but y_pred has 1"):
        accuracy_with_ci(["a", "b"], ["a"])


# --- confusion matrix -----------------------------------------------------------------------------


def test_confusion_matrix_scikit_learn_doc_examples() -> None:
    """scikit-learn documentation, ``sklearn.metrics.confusion_matrix``, Examples section:
    y_true = [2, 0, 2, 2, 0, 1], y_pred = [0, 0, 2, 2, 0, 2] -> [[2, 0, 0], [0, 0, 1], [1, 0, 2]], and
    the same with labels ant/bird/cat given explicitly."""
    cm = confusion_matrix([2, 0, 2, 2, 0, 1], [0, 0, 2, 2, 0, 2])
    assert cm.labels == [0, 1, 2]
    assert cm.columns == [0, 1, 2]
    assert cm.counts == [[2, 0, 0], [0, 0, 1], [1, 0, 2]]

    y_true = ["cat", "ant", "cat", "cat", "ant", "bird"]
    y_pred = ["ant", "ant", "cat", "cat", "ant", "cat"]
    cm = confusion_matrix(y_true, y_pred, labels=["ant", "bird", "cat"])
    assert cm.counts == [[2, 0, 0], [0, 0, 1], [1, 0, 2]]
    assert (cm.total, cm.correct, cm.invalid) == (6, 4, 0)


def test_confusion_matrix_invalid_column() -> None:
    cm = confusion_matrix(["a", "b", "b", "a"], ["a", None, "a", None])
    assert cm.labels == ["a", "b"]
    assert cm.columns == ["a", "b", INVALID]
    assert cm.counts == [[1, 0, 1], [1, 0, 1]]
    assert (cm.total, cm.correct, cm.invalid) == (4, 1, 2)


def test_confusion_matrix_label_order_and_unused_labels() -> None:
    cm = confusion_matrix(["x", "y"], ["y", "y"], labels=["z", "y", "x"])
    assert cm.counts == [[0, 0, 0], [0, 1, 0], [0, 1, 0]]


@pytest.mark.parametrize(
    ("y_true", "y_pred", "labels", "match"),
    [
        (["a", "b"], ["a"], None, "2 items but y_pred has 1"),
        (["a", None], ["a", "a"], None, "gold label"),
        (["a", "b"], ["a", "c"], ["a", "b"], r"do not include \['c'\]"),
        (["a"], ["a"], ["a", "a"], "duplicates"),
        ([INVALID], ["x"], None, "reserved"),
    ],
)
def test_confusion_matrix_errors(y_true: list, y_pred: list, labels: list | None, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        confusion_matrix(y_true, y_pred, labels)


# --- per-label report -----------------------------------------------------------------------------


def test_per_label_report_scikit_learn_doc_example() -> None:
    """scikit-learn documentation, ``sklearn.metrics.classification_report``, Examples section:
    y_true = [0, 1, 2, 2, 2], y_pred = [0, 0, 2, 2, 1] prints
    class 0: precision 0.50, recall 1.00, f1 0.67, support 1; class 1: 0.00 0.00 0.00, 1;
    class 2: 1.00 0.67 0.80, 3; accuracy 0.60; macro avg 0.50 0.56 0.49."""
    report = per_label_report([0, 1, 2, 2, 2], [0, 0, 2, 2, 1])
    rows = [(m.label, round(m.precision, 2), round(m.recall, 2), round(m.f1, 2), m.support) for m in report.per_label]
    assert rows == [(0, 0.50, 1.00, 0.67, 1), (1, 0.00, 0.00, 0.00, 1), (2, 1.00, 0.67, 0.80, 3)]
    assert round(report.accuracy, 2) == 0.60
    macro = (round(report.macro_precision, 2), round(report.macro_recall, 2), round(report.macro_f1, 2))
    assert macro == (0.50, 0.56, 0.49)
    assert (report.n, report.invalid) == (5, 0)


def test_per_label_report_invalid_predictions_hurt_recall_only() -> None:
    report = per_label_report(["a", "a", "b", "b"], ["a", None, "b", None])
    a, b = report.per_label
    assert (a.precision, a.recall) == (1.0, 0.5)
    assert (b.precision, b.recall) == (1.0, 0.5)
    assert report.accuracy == 0.5
    assert report.invalid == 2


def test_per_label_report_zero_support_label_counts_in_macro() -> None:
    report = per_label_report(["a", "a"], ["a", "a"], labels=["a", "b"])
    assert [m.support for m in report.per_label] == [2, 0]
    assert report.macro_recall == 0.5  # (1.0 + 0.0) / 2, as scikit-learn with zero_division=0


# --- Cohen's kappa --------------------------------------------------------------------------------


def test_kappa_altman_xeromammograms() -> None:
    """Altman (1991), Practical Statistics for Medical Research, pp. 403-405 (data of Boyd et al. 1982,
    also the worked example of Stata's ``kap`` command): 85 xeromammograms, observed agreement
    (21 + 17 + 15 + 1) / 85 = 0.635, agreement expected by chance 0.308, kappa = 0.47."""
    y_a, y_b = _from_table(XERO_LABELS, XERO_TABLE)
    result = cohens_kappa(y_a, y_b, labels=XERO_LABELS)
    assert result.n == 85
    assert result.observed_agreement == pytest.approx(54 / 85)
    assert round(result.observed_agreement, 3) == 0.635
    # Margins A = (33, 22, 29, 1), B = (28, 38, 16, 3): (924 + 836 + 464 + 3) / 85^2.
    assert result.expected_agreement == pytest.approx(2227 / 85**2)
    assert round(result.expected_agreement, 3) == 0.308
    assert round(result.kappa, 2) == 0.47


def test_kappa_wikipedia_two_readers_example() -> None:
    """Wikipedia, "Cohen's kappa", simple worked example: 50 grant proposals, both yes 20, A yes /
    B no 5, A no / B yes 10, both no 15: p_o = 0.7, p_e = 0.5, kappa = 0.4."""
    y_a, y_b = _from_table(["yes", "no"], [[20, 5], [10, 15]])
    result = cohens_kappa(y_a, y_b)
    assert result.observed_agreement == pytest.approx(0.7)
    assert result.expected_agreement == pytest.approx(0.5)
    assert result.kappa == pytest.approx(0.4)


def test_kappa_invalid_predictions_are_disagreements() -> None:
    y_true = ["a", "a", "b", "b"]
    assert cohens_kappa(y_true, ["a", "a", "b", "b"]).kappa == pytest.approx(1.0)
    with_invalid = cohens_kappa(y_true, ["a", None, "b", None])
    assert with_invalid.observed_agreement == 0.5
    assert with_invalid.kappa < 1.0


def test_kappa_undefined_when_chance_agreement_is_total() -> None:
    assert np.isnan(cohens_kappa(["a", "a"], ["a", "a"]).kappa)


def test_metrics_agree_with_scikit_learn_on_random_labels() -> None:
    """Second check against an independent implementation, when scikit-learn is installed."""
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(7)
    labels = ["p", "q", "r", "s"]
    y_true = list(rng.choice(labels, 300))
    y_pred = [t if rng.random() < 0.6 else str(rng.choice(labels)) for t in y_true]
    ours = per_label_report(y_true, y_pred)
    precision, recall, f1, support = sk.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    assert [m.precision for m in ours.per_label] == pytest.approx(list(precision))
    assert [m.recall for m in ours.per_label] == pytest.approx(list(recall))
    assert [m.f1 for m in ours.per_label] == pytest.approx(list(f1))
    assert [m.support for m in ours.per_label] == list(support)
    assert cohens_kappa(y_true, y_pred).kappa == pytest.approx(sk.cohen_kappa_score(y_true, y_pred))
    assert confusion_matrix(y_true, y_pred).counts == sk.confusion_matrix(y_true, y_pred, labels=labels).tolist()


# --- plot -----------------------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _assert_png(path: Path) -> None:
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert path.stat().st_size > 1024


def test_plot_confusion_matrix_writes_png(tmp_path: Path) -> None:
    y_a, y_b = _from_table(XERO_LABELS, XERO_TABLE)
    cm = confusion_matrix(y_a, y_b, labels=XERO_LABELS)
    out = plot_confusion_matrix(cm, tmp_path / "plots" / "xero.png", "Radiologist A vs B")
    assert out == tmp_path / "plots" / "xero.png"
    _assert_png(out)


@pytest.mark.slow
def test_plot_confusion_matrix_forty_labels_with_invalid(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = [f"category_{i:02d}_{'long_name' * (i % 3)}" for i in range(40)]
    y_true = [str(v) for v in rng.choice(labels, 1000)]
    y_pred = [t if rng.random() < 0.7 else (None if rng.random() < 0.3 else str(rng.choice(labels))) for t in y_true]
    cm = confusion_matrix(y_true, y_pred)
    assert isinstance(cm, ConfusionMatrix) and cm.columns[-1] == INVALID
    _assert_png(plot_confusion_matrix(cm, tmp_path / "forty.png", "40 labels"))


def test_plots_never_touch_pyplot(tmp_path: Path) -> None:
    """Neither importing the module nor drawing imports pyplot (no global backend or figure state)."""
    code = (
        "import sys, pipeline.report.plots as p, pipeline.stats.metrics as m; "
        f"p.plot_confusion_matrix(m.confusion_matrix(['a', 'b'], ['a', None]), {str(tmp_path / 'x.png')!r}); "
        "print('matplotlib.pyplot' in sys.modules)"
    )
    root = Path(__file__).parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == "False"
    _assert_png(tmp_path / "x.png")
