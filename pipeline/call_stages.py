"""Planning, status and the one budget of an experiment's call stages (no Dagster).

One budget covers every call stage of a run: what the current plans of all stages have cost so far
(primary calls, repairs, judges, syntheses) counts against `budget.max_cost_usd`, and each stage's
pre-flight check adds the estimate of its own calls not yet answered.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.context import ExperimentContext
from pipeline.llm.cost import Budget, check_prices, estimate_call_cost
from pipeline.plan import CallPlan
from pipeline.stages import CallStage, StageInputs


@dataclass(frozen=True)
class PlanSummary:
    """What planning one call stage produced: its calls and their upper-bound cost."""

    stage: str
    plan: CallPlan
    estimated_cost_usd: float
    budget_usd: float | None
    already_answered: int
    spent_usd: float
    priced_models: tuple[str, ...]

    @property
    def within_budget(self) -> bool:
        """True when the run's spend so far plus this stage's estimate fits the budget."""
        return self.budget_usd is None or self.spent_usd + self.estimated_cost_usd <= self.budget_usd


@dataclass(frozen=True)
class StageStatus:
    """Answered / missing calls of one call stage's current plan, and what its answers cost."""

    stage: str
    planned: int
    done: int
    missing_keys: tuple[str, ...]
    spent_usd: float
    by_fallback: int = 0

    @property
    def missing(self) -> int:
        """Calls without an answer."""
        return len(self.missing_keys)


def plan_call_stage(context: ExperimentContext, stage: CallStage, inputs: StageInputs) -> PlanSummary:
    """Build and save the stage's plan; estimate what its unanswered calls may cost."""
    plan = stage.plan(inputs)
    budget = context.config.budget.max_cost_usd
    # A model without a price would make --max-cost meaningless (its calls would count as free).
    check_prices(sorted({call.spec.alias for call in plan.calls}), context.zoo, budget)
    plan.save(context.plan_path(stage.name))
    answered = context.store.answered_ids()
    estimate = 0.0
    priced: set[str] = set()
    for call in plan.calls:
        if call.call_id not in answered:
            # The figure the client reserves (the dearest model of the fallback chain): the two must agree.
            call_estimate = estimate_call_cost(call.spec, context.zoo)
            estimate += call_estimate.usd
            priced.add(call_estimate.priced_model)
    already = sum(1 for call in plan.calls if call.call_id in answered)
    return PlanSummary(
        stage.name,
        plan,
        estimate,
        budget,
        already,
        run_spent_usd(context),
        tuple(sorted(priced)),
    )


def load_plan(context: ExperimentContext, stage: str) -> CallPlan | None:
    """The stage's current plan, or None before it was planned."""
    path = context.plan_path(stage)
    return CallPlan.load(path) if path.exists() else None


def stage_status(context: ExperimentContext, stage: str) -> StageStatus:
    """Which calls of the stage's plan have answers (their own or a fallback's), and their cost."""
    plan = load_plan(context, stage)
    if plan is None:
        return StageStatus(stage, 0, 0, (), 0.0)
    stored = context.store.stored_ids()
    substituted = context.store.substituted_ids()
    spent = 0.0
    missing: list[str] = []
    done = by_fallback = 0
    for call in plan.calls:
        if call.call_id in stored or call.call_id in substituted:
            done += 1
            by_fallback += call.call_id not in stored
            record = context.store.get_answer(call.call_id)
            spent += record.cost_usd if record is not None else 0.0
        else:
            missing.append(call.key)
    return StageStatus(stage, len(plan.calls), done, tuple(missing), spent, by_fallback)


def run_status(context: ExperimentContext) -> list[StageStatus]:
    """Status of every call stage, in dependency order."""
    return [stage_status(context, stage.name) for stage in context.graph.call_stages]


def run_spent_usd(context: ExperimentContext) -> float:
    """What the current plans of all call stages have cost so far (each stored answer counted once)."""
    seen: set[str] = set()
    total = 0.0
    answered = context.store.answered_ids()
    for stage in context.graph.call_stages:
        plan = load_plan(context, stage.name)
        for call in plan.calls if plan is not None else ():
            if call.call_id not in answered:
                continue
            record = context.store.get_answer(call.call_id)
            if record is not None and record.call_id not in seen:
                seen.add(record.call_id)
                total += record.cost_usd
    return total


def run_budget(context: ExperimentContext) -> Budget:
    """The run's budget with what all its call stages have spent already (resume keeps the limit)."""
    return Budget(context.config.budget.max_cost_usd, already_spent_usd=run_spent_usd(context))


def expected_calls(context: ExperimentContext, *, resuming: bool = False) -> int:
    """About how many primary calls the next run sends, cheaply (no rendering); decides on a call worker."""
    if resuming:
        plan = load_plan(context, context.graph.call_stages[0].name)
        if plan is None:
            return 0
        answered = context.store.answered_ids()
        return sum(1 for call_id in plan.call_ids if call_id not in answered)
    return context.kind.expected_calls(context.aliases())


def needed_call_ids(context: ExperimentContext) -> set[str]:
    """Every call id the current plans of the experiment need: planned calls and the records answering them."""
    needed: set[str] = set()
    for stage in context.graph.call_stages:
        plan = load_plan(context, stage.name)
        for call in plan.calls if plan is not None else ():
            needed.add(call.call_id)
            record = context.store.get_answer(call.call_id)
            if record is not None:
                needed.add(record.call_id)
    return needed
