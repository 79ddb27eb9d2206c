"""Model comparison on one gold set: accuracy with intervals, cost, latency, paired tests, and the cheapest model
whose accuracy is within a chosen margin of the best.

All models must be scored on the same items: a comparison on different items would credit a model for the items
it happened to get. The best model is the most accurate (ties: the cheaper); every other model is tested against
it with McNemar's test (`pipeline.stats.paired.mcnemar_test`, exact below 25 discordant items), which uses the
pairing instead of comparing two independent intervals. An invalid or missing answer counts as wrong.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from pipeline.evaluation.records import Record
from pipeline.stats.paired import McNemarResult, mcnemar_test
from pipeline.stats.proportions import Interval, wilson_interval

__all__ = [
    "ItemOutcome",
    "ModelComparison",
    "ModelSummary",
    "PairedComparison",
    "compare_models",
    "render_comparison_markdown",
]


@dataclass(frozen=True)
class ItemOutcome:
    """One model's result on one gold item."""

    item_id: str
    correct: bool | None
    """None = no valid answer (counts as wrong)."""
    cost_usd: float = 0.0
    latency_s: float = 0.0


class ModelSummary(Record):
    """One model over the gold items."""

    format_version: Literal[1] = 1
    model: str
    n: int
    accuracy: Interval
    """Wilson interval."""
    total_cost_usd: float
    cost_per_item_usd: float
    latency_p50_s: float
    latency_p95_s: float


class PairedComparison(Record):
    """The best model against another on the same items."""

    format_version: Literal[1] = 1
    best: str
    other: str
    accuracy_difference: float
    """best - other."""
    mcnemar: McNemarResult
    """b: items only the best got right; c: items only the other got right."""


class ModelComparison(Record):
    """Every model's summary, the paired tests against the best, and the recommendation."""

    format_version: Literal[1] = 1
    models: tuple[ModelSummary, ...]
    """Sorted by accuracy (highest first), then cost."""
    best: str
    paired: tuple[PairedComparison, ...]
    margin: float
    """Accuracy points (0..1) a model may lose against the best and still be recommended."""
    recommended: str
    """The cheapest model whose accuracy is at least best - margin."""
    evidence: str
    """The recommendation and its evidence in one sentence."""


def _check_same_items(results: Mapping[str, Sequence[ItemOutcome]]) -> list[str]:
    if len(results) < 2:
        raise ValueError(f"compare at least 2 models; got {sorted(results)}")
    reference_model = next(iter(results))
    reference = [o.item_id for o in results[reference_model]]
    if len(set(reference)) != len(reference):
        raise ValueError(f"model {reference_model!r} has an item twice; pass one outcome per item and model")
    if not reference:
        raise ValueError(f"model {reference_model!r} has no items; score every model on the gold set first")
    for model, outcomes in results.items():
        ids = [o.item_id for o in outcomes]
        if len(set(ids)) != len(ids):
            raise ValueError(f"model {model!r} has an item twice; pass one outcome per item and model")
        missing = sorted(set(reference) - set(ids))
        extra = sorted(set(ids) - set(reference))
        if missing or extra:
            raise ValueError(
                f"model {model!r} was scored on other items than {reference_model!r} (missing {missing[:5]}, extra "
                f"{extra[:5]}); compare models on the same gold items (re-run the missing calls or drop the items)"
            )
    return sorted(reference)


def _summary(model: str, outcomes: Sequence[ItemOutcome], confidence: float) -> ModelSummary:
    correct = sum(bool(o.correct) for o in outcomes)
    latencies = np.asarray([o.latency_s for o in outcomes], dtype=float)
    total = float(sum(o.cost_usd for o in outcomes))
    return ModelSummary(
        model=model,
        n=len(outcomes),
        accuracy=wilson_interval(correct, len(outcomes), confidence),
        total_cost_usd=total,
        cost_per_item_usd=total / len(outcomes),
        latency_p50_s=float(np.percentile(latencies, 50)),
        latency_p95_s=float(np.percentile(latencies, 95)),
    )


def compare_models(
    results: Mapping[str, Sequence[ItemOutcome]], margin: float = 0.02, confidence: float = 0.95
) -> ModelComparison:
    """Compare models (name -> outcomes on the same items) and recommend the cheapest within `margin` of the best."""
    if not 0.0 <= margin <= 1.0:
        raise ValueError(f"margin is in accuracy points between 0 and 1 (0.02 = 2 points), got {margin!r}")
    items = _check_same_items(results)
    by_item = {model: {o.item_id: o for o in outcomes} for model, outcomes in results.items()}
    summaries = sorted(
        (_summary(model, outcomes, confidence) for model, outcomes in results.items()),
        key=lambda s: (-s.accuracy.estimate, s.total_cost_usd, s.model),
    )
    best = summaries[0]
    best_correct = [bool(by_item[best.model][i].correct) for i in items]
    paired = tuple(
        PairedComparison(
            best=best.model,
            other=summary.model,
            accuracy_difference=best.accuracy.estimate - summary.accuracy.estimate,
            mcnemar=mcnemar_test(best_correct, [bool(by_item[summary.model][i].correct) for i in items]),
        )
        for summary in summaries[1:]
    )
    # A tiny tolerance so that "exactly at the margin" (0.90 - 0.02 vs 0.88) is not lost to float rounding.
    within = [s for s in summaries if s.accuracy.estimate >= best.accuracy.estimate - margin - 1e-12]
    recommended = min(within, key=lambda s: (s.total_cost_usd, -s.accuracy.estimate, s.model))
    return ModelComparison(
        models=tuple(summaries),
        best=best.model,
        paired=paired,
        margin=margin,
        recommended=recommended.model,
        evidence=_evidence(best, recommended, paired, margin, len(items)),
    )


def _acc(summary: ModelSummary) -> str:
    a = summary.accuracy
    return f"{a.estimate:.1%} [{a.low:.1%}, {a.high:.1%}]"


def _evidence(
    best: ModelSummary, chosen: ModelSummary, paired: Sequence[PairedComparison], margin: float, n: int
) -> str:
    if chosen.model == best.model:
        return (
            f"{best.model} is both the most accurate ({_acc(best)} on {n} items) and the cheapest model within "
            f"{margin:.1%} of it (${best.total_cost_usd:.4f})."
        )
    test = next(p for p in paired if p.other == chosen.model)
    ratio = best.total_cost_usd / chosen.total_cost_usd if chosen.total_cost_usd > 0 else float("inf")
    cheaper = "at no cost" if chosen.total_cost_usd == 0 else f"{ratio:.1f}x cheaper"
    return (
        f"{chosen.model} is the cheapest model within {margin:.1%} of the best: {_acc(chosen)} vs {best.model}'s "
        f"{_acc(best)} on the same {n} items, ${chosen.total_cost_usd:.4f} vs ${best.total_cost_usd:.4f} ({cheaper}), "
        f"McNemar {test.mcnemar.method} p = {test.mcnemar.p_value:.3g} ({test.mcnemar.b} items only {best.model} "
        f"got right, {test.mcnemar.c} only {chosen.model})."
    )


def render_comparison_markdown(comparison: ModelComparison) -> str:
    """A Markdown table of the models, then the recommendation sentence."""
    tests = {p.other: p for p in comparison.paired}
    lines = [
        "| model | accuracy | 95% CI | cost (USD) | per item | latency p50 (s) | p95 (s) | vs best (McNemar p) |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for s in comparison.models:
        test = tests.get(s.model)
        versus = "best" if test is None else f"{-test.accuracy_difference:+.1%} (p = {test.mcnemar.p_value:.3g})"
        name = f"**{s.model}**" if s.model == comparison.recommended else s.model
        lines.append(
            f"| {name} | {s.accuracy.estimate:.1%} | [{s.accuracy.low:.1%}, {s.accuracy.high:.1%}] | "
            f"{s.total_cost_usd:.4f} | {s.cost_per_item_usd:.6f} | {s.latency_p50_s:.2f} | {s.latency_p95_s:.2f} | "
            f"{versus} |"
        )
    return "\n".join(lines) + f"\n\n{comparison.evidence}\n"
