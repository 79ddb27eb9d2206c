"""Canary drift: does a pinned model still answer as it did?

A canary run asks the same items as a stored baseline run. `compare_runs` reports how often the answers agree
(with a Wilson interval), the items whose answer changed, and, when gold answers are given, the accuracy of both
runs with McNemar's paired test of the change. `drift_alarm` turns that into an alarm under a `DriftConfig`
(the thresholds a canary schedule is configured with). Answers are compared as `answers_match` does (strings
stripped and case-folded), so "Sports" vs "sports" is not drift.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pipeline.evaluation.answers import answers_match, normalize_answer
from pipeline.evaluation.drift_config import DriftConfig
from pipeline.evaluation.records import Record
from pipeline.stats.paired import McNemarResult, mcnemar_test
from pipeline.stats.proportions import Interval, wilson_interval

__all__ = ["ChangedItem", "DriftAlarm", "DriftConfig", "DriftResult", "compare_runs", "drift_alarm"]


class ChangedItem(Record):
    """An item whose canary answer differs from the baseline's."""

    format_version: Literal[1] = 1
    item_id: str
    baseline: Any
    canary: Any
    expected: Any = None
    """The gold answer, when known."""


class DriftResult(Record):
    """A canary run against its baseline on the items both answered."""

    format_version: Literal[1] = 1
    n_items: int
    """Items in both runs."""
    agreement: Interval
    """Share of those items with the same answer (Wilson interval)."""
    changed: tuple[ChangedItem, ...]
    missing_in_canary: tuple[str, ...]
    """Baseline items the canary did not answer."""
    new_in_canary: tuple[str, ...]
    """Canary items the baseline does not have (ignored)."""
    baseline_accuracy: Interval | None = None
    """On the shared items with gold answers; None without gold."""
    canary_accuracy: Interval | None = None
    mcnemar: McNemarResult | None = None
    """b: items only the baseline got right; c: only the canary."""

    @property
    def accuracy_change(self) -> float | None:
        """Canary accuracy - baseline accuracy (None without gold)."""
        if self.baseline_accuracy is None or self.canary_accuracy is None:
            return None
        return self.canary_accuracy.estimate - self.baseline_accuracy.estimate


def compare_runs(
    baseline: Mapping[str, Any],
    canary: Mapping[str, Any],
    gold: Mapping[str, Any] | None = None,
    confidence: float = 0.95,
) -> DriftResult:
    """Compare answers (item id -> answer; None = invalid) of a canary run with its baseline on shared items."""
    shared = sorted(set(baseline) & set(canary))
    if not shared:
        raise ValueError(
            f"the canary and the baseline share no item (baseline {len(baseline)} items, canary {len(canary)}); "
            "run the canary on the baseline's items"
        )
    # Two invalid answers (None) agree with each other: the model behaves as before.
    same = [normalize_answer(baseline[i]) == normalize_answer(canary[i]) for i in shared]
    changed = tuple(
        ChangedItem(item_id=i, baseline=baseline[i], canary=canary[i], expected=None if gold is None else gold.get(i))
        for i, agree in zip(shared, same, strict=True)
        if not agree
    )
    baseline_accuracy = canary_accuracy = None
    test = None
    scored = [i for i in shared if gold is not None and gold.get(i) is not None]
    if gold is not None and scored:
        base_ok = [answers_match(gold[i], baseline[i]) for i in scored]
        canary_ok = [answers_match(gold[i], canary[i]) for i in scored]
        baseline_accuracy = wilson_interval(sum(base_ok), len(scored), confidence)
        canary_accuracy = wilson_interval(sum(canary_ok), len(scored), confidence)
        test = mcnemar_test(base_ok, canary_ok)
    return DriftResult(
        n_items=len(shared),
        agreement=wilson_interval(sum(same), len(shared), confidence),
        changed=changed,
        missing_in_canary=tuple(sorted(set(baseline) - set(canary))),
        new_in_canary=tuple(sorted(set(canary) - set(baseline))),
        baseline_accuracy=baseline_accuracy,
        canary_accuracy=canary_accuracy,
        mcnemar=test,
    )


class DriftAlarm(Record):
    """Whether a canary run drifted, and every reason it did."""

    format_version: Literal[1] = 1
    alarm: bool
    reasons: tuple[str, ...]

    def __bool__(self) -> bool:
        return self.alarm


def drift_alarm(result: DriftResult, config: DriftConfig) -> DriftAlarm:
    """Alarm on low agreement, an accuracy drop past the threshold, a significant drop, or missing answers."""
    reasons = []
    agreement = result.agreement.estimate
    if agreement < config.min_agreement:
        reasons.append(
            f"agreement with the baseline {agreement:.1%} is below {config.min_agreement:.1%} "
            f"({len(result.changed)} of {result.n_items} answers changed)"
        )
    change = result.accuracy_change
    if change is not None and -change > config.max_accuracy_drop:
        reasons.append(f"accuracy fell by {-change:.1%}, more than {config.max_accuracy_drop:.1%}")
    test = result.mcnemar
    if test is not None and test.b > test.c and test.p_value < config.alpha:
        reasons.append(
            f"the drop is significant: McNemar {test.method} p = {test.p_value:.3g} < {config.alpha} "
            f"({test.b} items lost, {test.c} gained)"
        )
    if len(result.missing_in_canary) > config.max_missing:
        reasons.append(
            f"{len(result.missing_in_canary)} baseline items have no canary answer (allowed {config.max_missing}), "
            f"e.g. {', '.join(result.missing_in_canary[:3])}"
        )
    return DriftAlarm(alarm=bool(reasons), reasons=tuple(reasons))
