"""Classification metrics against gold labels, with invalid answers kept visible.

A prediction of ``None`` means the model's answer could not be parsed into a label. It always counts
as wrong, and the confusion matrix shows it in its own column, ``"(invalid)"``, so that a model
that fails to answer is not confused with one that answers wrongly.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from pipeline.stats.proportions import Interval, wilson_interval

__all__ = [
    "INVALID",
    "ConfusionMatrix",
    "KappaResult",
    "LabelMetrics",
    "LabelReport",
    "accuracy_with_ci",
    "cohens_kappa",
    "confusion_matrix",
    "per_label_report",
]

INVALID = "(invalid)"
"""Column name of the confusion matrix for predictions that were ``None``."""


@dataclass(frozen=True)
class ConfusionMatrix:
    """Counts of (true label, predicted label); rows are true labels, columns predicted labels."""

    labels: list[Hashable]
    """The class labels, in row order; the first ``len(labels)`` columns use the same order."""
    columns: list[Hashable]
    """Column names: ``labels``, then ``"(invalid)"`` if any prediction was ``None``."""
    counts: list[list[int]]
    """``counts[i][j]``: items whose true label is ``labels[i]`` and prediction is ``columns[j]``."""

    @property
    def total(self) -> int:
        """Number of items."""
        return sum(sum(row) for row in self.counts)

    @property
    def correct(self) -> int:
        """Number of items predicted correctly (the diagonal)."""
        return sum(self.counts[i][i] for i in range(len(self.labels)))

    @property
    def invalid(self) -> int:
        """Number of items whose prediction was ``None``."""
        if not self.columns or self.columns[-1] != INVALID:
            return 0
        return sum(row[-1] for row in self.counts)


@dataclass(frozen=True)
class LabelMetrics:
    """Precision, recall and F1 of one label, treating it as the positive class."""

    label: Hashable
    precision: float
    """Correct predictions of the label / all predictions of it (0.0 when it was never predicted)."""
    recall: float
    """Correct predictions of the label / items truly of it (0.0 when it has no items)."""
    f1: float
    """Harmonic mean of precision and recall (0.0 when both are 0)."""
    support: int
    """Number of items whose true label is this one."""


@dataclass(frozen=True)
class LabelReport:
    """Per-label metrics and their unweighted (macro) averages."""

    per_label: list[LabelMetrics]
    macro_precision: float
    macro_recall: float
    macro_f1: float
    accuracy: float
    """Correct / all items; invalid predictions count as wrong."""
    n: int
    """Number of items."""
    invalid: int
    """Number of ``None`` predictions."""


@dataclass(frozen=True)
class KappaResult:
    """Cohen's kappa: agreement beyond chance between gold labels and predictions."""

    kappa: float
    """(observed - expected) / (1 - expected); NaN when expected agreement is 1 (undefined)."""
    observed_agreement: float
    """Fraction of items where prediction equals the gold label."""
    expected_agreement: float
    """Agreement expected by chance from the two sets of marginal frequencies."""
    n: int


def _sort_labels(values: set[Hashable]) -> list[Hashable]:
    try:
        return sorted(values)  # type: ignore[type-var]
    except TypeError:
        # Mixed types (e.g. 1 and "1") cannot be compared; fall back to a stable textual order.
        return sorted(values, key=lambda v: (type(v).__name__, repr(v)))


def _resolve_labels(
    y_true: Sequence[Hashable], y_pred: Sequence[Hashable | None], labels: Sequence[Hashable] | None
) -> list[Hashable]:
    if len(y_true) != len(y_pred):
        raise ValueError(
            f"y_true has {len(y_true)} items but y_pred has {len(y_pred)}; pass one prediction per gold "
            "label (use None for an answer that could not be parsed)."
        )
    missing_gold = [i for i, t in enumerate(y_true) if t is None]
    if missing_gold:
        raise ValueError(
            f"y_true has None at positions {missing_gold[:10]}; every item needs a gold label. "
            "Drop unlabeled items before scoring."
        )
    if labels is None:
        resolved = _sort_labels(set(y_true) | {p for p in y_pred if p is not None})
    else:
        resolved = list(labels)
        if len(set(resolved)) != len(resolved):
            raise ValueError(f"labels contains duplicates: {resolved!r}.")
        unknown = _sort_labels(({*y_true} | {p for p in y_pred if p is not None}) - set(resolved))
        if unknown:
            raise ValueError(
                f"labels {resolved!r} do not include {unknown!r}, which occur in y_true or y_pred. "
                "Add them to labels, or map out-of-set predictions to None (invalid) first."
            )
    if INVALID in resolved:
        raise ValueError(f"{INVALID!r} is reserved for None predictions and cannot be a label; rename that label.")
    return resolved


def confusion_matrix(
    y_true: Sequence[Hashable],
    y_pred: Sequence[Hashable | None],
    labels: Sequence[Hashable] | None = None,
) -> ConfusionMatrix:
    """Confusion matrix; rows = true labels, columns = predicted labels (+ ``"(invalid)"``).

    ``labels`` fixes the order (and may include labels that never occur); by default it is the
    sorted set of labels seen in ``y_true`` and ``y_pred``. The ``"(invalid)"`` column is added only
    when some prediction is ``None``.
    """
    resolved = _resolve_labels(y_true, y_pred, labels)
    index = {label: i for i, label in enumerate(resolved)}
    has_invalid = any(p is None for p in y_pred)
    width = len(resolved) + (1 if has_invalid else 0)
    counts = [[0] * width for _ in resolved]
    for t, p in zip(y_true, y_pred, strict=True):
        counts[index[t]][width - 1 if p is None else index[p]] += 1
    columns: list[Hashable] = [*resolved, INVALID] if has_invalid else list(resolved)
    return ConfusionMatrix(labels=resolved, columns=columns, counts=counts)


def accuracy_with_ci(
    y_true: Sequence[Hashable], y_pred: Sequence[Hashable | None], confidence: float = 0.95
) -> Interval:
    """Accuracy with a Wilson score interval; ``None`` predictions count as wrong."""
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} items but y_pred has {len(y_pred)}; they must match.")
    if len(y_true) == 0:
        raise ValueError("y_true is empty: accuracy of zero items is undefined. Score at least one item.")
    correct = sum(1 for t, p in zip(y_true, y_pred, strict=True) if p is not None and p == t)
    return wilson_interval(correct, len(y_true), confidence=confidence)


def per_label_report(
    y_true: Sequence[Hashable],
    y_pred: Sequence[Hashable | None],
    labels: Sequence[Hashable] | None = None,
) -> LabelReport:
    """Precision, recall, F1 and support per label, with macro averages over ``labels``.

    A label never predicted has precision 0.0 and a label with no items has recall 0.0 (the
    ``zero_division=0`` convention of scikit-learn); both still count in the macro averages.
    """
    cm = confusion_matrix(y_true, y_pred, labels)
    k = len(cm.labels)
    per_label = []
    for i, label in enumerate(cm.labels):
        tp = cm.counts[i][i]
        support = sum(cm.counts[i])
        predicted = sum(cm.counts[r][i] for r in range(k))
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_label.append(LabelMetrics(label, precision, recall, f1, support))
    n = cm.total
    return LabelReport(
        per_label=per_label,
        macro_precision=sum(m.precision for m in per_label) / k if k else 0.0,
        macro_recall=sum(m.recall for m in per_label) / k if k else 0.0,
        macro_f1=sum(m.f1 for m in per_label) / k if k else 0.0,
        accuracy=cm.correct / n if n else 0.0,
        n=n,
        invalid=cm.invalid,
    )


def cohens_kappa(
    y_true: Sequence[Hashable],
    y_pred: Sequence[Hashable | None],
    labels: Sequence[Hashable] | None = None,
) -> KappaResult:
    """Cohen's (1960) unweighted kappa between gold labels and predictions.

    ``None`` predictions form their own category, which never agrees with a gold label.
    """
    cm = confusion_matrix(y_true, y_pred, labels)
    n = cm.total
    if n == 0:
        raise ValueError("y_true is empty: kappa of zero items is undefined. Score at least one item.")
    row_totals = [sum(row) for row in cm.counts]
    col_totals = [sum(row[j] for row in cm.counts) for j in range(len(cm.columns))]
    observed = cm.correct / n
    # Only label columns pair with a row; the invalid column adds nothing to chance agreement.
    expected = sum(row_totals[i] * col_totals[i] for i in range(len(cm.labels))) / (n * n)
    kappa = (observed - expected) / (1.0 - expected) if expected < 1.0 else float("nan")
    return KappaResult(kappa=kappa, observed_agreement=observed, expected_agreement=expected, n=n)
