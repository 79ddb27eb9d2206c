"""Keep a call stage's unanswered partitions together at the end of its partition order.

Dagster turns a backfill of scattered partitions into one run per contiguous range (106 failed calls of
`hello` became 46 runs of ~21 s). Kept together at the end, failed and missing calls form one range, which
a UI backfill splits into ceil(N / calls-per-run) runs. `assay run`/`resume` do this after each call stage;
the run-failure sensor in schedules/partition_order.py does it after runs launched anywhere else.
Deleting a dynamic partition keeps its history (only the key's row goes); adding it again appends it.
"""

from __future__ import annotations

from dagster import DagsterInstance

from pipeline.call_stages import load_plan
from pipeline.config import ExperimentConfig
from pipeline.context import ExperimentContext


def partitions_name(config: ExperimentConfig, stage: str) -> str:
    """Name of the dynamic partitions of one call stage (one partition per call)."""
    return f"{config.asset_prefix}__{stage}"


def keep_unanswered_together(instance: DagsterInstance, context: ExperimentContext, stage: str) -> int:
    """Move the stage's unanswered partitions after all answered ones; returns how many moved."""
    plan = load_plan(context, stage)
    if plan is None:
        return 0
    name = partitions_name(context.config, stage)
    ordered = list(instance.get_dynamic_partitions(name))
    answered = context.store.answered_ids()
    pending = {call.key for call in plan.calls if call.call_id not in answered}
    tail = 0
    for key in reversed(ordered):  # the ones already together at the end stay where they are
        if key not in pending:
            break
        tail += 1
    to_move = [key for key in ordered[: len(ordered) - tail] if key in pending]
    for key in to_move:
        instance.delete_dynamic_partition(name, key)
    if to_move:
        instance.add_dynamic_partitions(name, to_move)
    return len(to_move)
