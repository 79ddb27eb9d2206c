"""ExperimentLauncher: what `assay run / resume / status` do with Dagster.

A run walks the experiment's stage graph (pipeline.stages): for each call stage, one run of the segment
job that prepares it (the upstream data stages and the stage's plan, which registers one dynamic partition
per call), then range runs of that stage's calls job over the calls still to do; finally the analysis job.
One budget covers all stages; a stop on the budget skips the calls of later stages but still plans them
and writes the report, so `assay resume --max-cost <more>` knows what is left.

Every run is tagged with this process's pid, so `resume` can tell a run whose process died (still STARTED
in Dagster) from one that is alive, and mark the dead one failed before re-running its calls.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagster import AssetKey, DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter, execute_job
from dagster._core.definitions.reconstruct import ReconstructableJob, ReconstructableRepository
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from assets.experiment import calls_job_name, partitions_name, segment_job_name
from assets.stage_assets import STOPPED_BY
from jobs.instance import get_instance
from jobs.partition_order import keep_unanswered_together
from pipeline.audit import (
    CALLS_STORED,
    CONFIG_HASH,
    REPORT_WRITTEN,
    RUN_STARTED,
    append_audit,
    audit_log_path,
    calls_stored_details,
)
from pipeline.call_stages import load_plan, needed_call_ids, run_status
from pipeline.calls import canonical_json
from pipeline.config import REPO_ROOT
from pipeline.context import ExperimentContext
from pipeline.llm.errors import ConfigError
from pipeline.report.readable import duration
from pipeline.run_lock import experiment_lock
from pipeline.runner import CallOutcome, RunHooks, StopReason, use_hooks
from pipeline.stages import CallStage, Segment
from pipeline.worker import WarmWorker

RUN_TAG_PID = "assay/pid"
RUN_TAG_EXPERIMENT = "assay/experiment"
ACTIVE_STATUSES = [DagsterRunStatus.STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.NOT_STARTED]


@dataclass
class CallsReport:
    """What the range runs of one call stage did."""

    targeted: int = 0
    runs: int = 0
    runs_failed: int = 0
    stopped_by: StopReason = StopReason.NONE
    messages: list[str] = field(default_factory=list)


def contiguous_ranges(ordered_keys: list[str], targets: Iterable[str], max_size: int) -> list[tuple[str, str]]:
    """Split `targets` into (start, end) ranges of consecutive keys of `ordered_keys`, each <= max_size keys.

    A Dagster range run covers every key between start and end, so ranges never span a key that is not
    a target: a stored call in the middle would be harmless (served from the store) but is not needed.
    """
    position = {key: index for index, key in enumerate(ordered_keys)}
    indexes = sorted(position[key] for key in set(targets) if key in position)
    ranges: list[tuple[str, str]] = []
    start = previous = None
    size = 0
    for index in indexes:
        if start is not None and previous is not None and index == previous + 1 and size < max_size:
            previous, size = index, size + 1
            continue
        if start is not None and previous is not None:
            ranges.append((ordered_keys[start], ordered_keys[previous]))
        start = previous = index
        size = 1
    if start is not None and previous is not None:
        ranges.append((ordered_keys[start], ordered_keys[previous]))
    return ranges


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ExperimentLauncher:
    """Runs one experiment's Dagster jobs in this process (see module docstring)."""

    def __init__(
        self,
        experiment: str,
        overrides: list[str],
        instance: DagsterInstance | None = None,
        *,
        warm_worker: WarmWorker | None = None,
    ) -> None:
        self.context = ExperimentContext(experiment, overrides)
        self.experiment = experiment  # a name, or the path of a --config file
        self.name = self.context.config.name
        self.overrides = overrides
        self._instance = instance  # created on first use: after the run lock, so two first runs never race on it
        self.graph = self.context.graph
        self.warm_worker = warm_worker
        self.last_message = ""
        self._started = time.time()
        self._progress: _Progress | None = None

    @property
    def instance(self) -> DagsterInstance:
        """The Dagster instance (the embedded SQLite one unless DAGSTER_HOME says otherwise)."""
        if self._instance is None:
            self._instance = get_instance()
        return self._instance

    # -- commands ---------------------------------------------------------------------------------------
    def run(self) -> int:
        """Plan and send every stage's calls not yet answered, then analyse. 0 when every call has an answer."""
        with experiment_lock(self.context.work_dir, self.name):
            self._audit_start("run")
            print(f"assay: {self.name}: planning (models: {', '.join(self.context.aliases())})", flush=True)
            return self._walk(resuming=False)

    def resume(self) -> int:
        """Mark dead runs failed, then only the calls that are failed or missing, stage by stage, then analyse."""
        first = self.graph.call_stages[0].name
        if load_plan(self.context, first) is None:
            raise ConfigError(f"no run of {self.name} yet: assay run {self.experiment}")
        with experiment_lock(self.context.work_dir, self.name):
            self._audit_start("resume")
            marked = self.mark_dead_runs_failed()
            if marked:
                print(f"assay: marked {marked} run(s) whose process died as FAILED", flush=True)
            return self._walk(resuming=True)

    def print_status(self) -> int:
        """Print done / failed / missing calls and spend, per call stage."""
        statuses = run_status(self.context)
        if not statuses or statuses[0].planned == 0:
            raise ConfigError(f"no run of {self.name} yet: assay run {self.experiment}")
        total = 0.0
        missing = 0
        for status in statuses:
            failed = self.failed_partitions(status.stage) & set(status.missing_keys)
            print(f"{self.name} / {status.stage}: {status.planned} calls planned")
            fallback = f" ({status.by_fallback} answered by a fallback model)" if status.by_fallback else ""
            print(f"  done:    {status.done}{fallback}")
            print(f"  failed:  {len(failed)}")
            print(f"  missing: {status.missing - len(failed)} (never run)")
            print(f"  spend:   ${status.spent_usd:.4f}")
            total += status.spent_usd
            missing += status.missing
        print(f"{self.name}: total spend ${total:.4f}")
        if missing:
            print(f"  next:    assay resume {self.experiment}")
        return 0

    # -- the audit log (pipeline/audit.py): who ran what, with which config, which calls were stored ------
    @property
    def _audit_path(self) -> Path:
        return audit_log_path(self.context.home, self.name)

    def _audit_start(self, command: str) -> None:
        self._started = time.time()
        config = {"experiment": self.context.config.model_dump(mode="json"), "models": self.context.aliases()}
        append_audit(self._audit_path, RUN_STARTED, {"command": command, "overrides": self.overrides})
        append_audit(
            self._audit_path, CONFIG_HASH, {"sha256": hashlib.sha256(canonical_json(config).encode()).hexdigest()}
        )

    def _audit_calls(self) -> None:
        """Log the records this command stored (by file time; their checksums make later edits visible)."""
        store = self.context.store
        fresh = [
            call_id
            for call_id in needed_call_ids(self.context)
            if store.record_path(call_id).exists() and store.record_path(call_id).stat().st_mtime >= self._started
        ]
        if fresh:
            append_audit(self._audit_path, CALLS_STORED, calls_stored_details(store, sorted(fresh)))

    # -- the walk ---------------------------------------------------------------------------------------
    def _walk(self, *, resuming: bool) -> int:
        hooks = RunHooks(on_outcome=self._on_outcome, warm_worker=self.warm_worker)
        stopped = StopReason.NONE
        with use_hooks(hooks):
            for index, segment in enumerate(self.graph.segments()):
                stage = segment.call_stage
                if stage is None:
                    break
                skip_prep = resuming and index == 0  # resume continues the plan it has
                if not skip_prep and segment.assets:
                    blocked = self._prepare(segment)
                    if blocked and index == 0 and not resuming:
                        return 2  # refused before any call was paid for
                    if blocked:
                        stopped = stopped or StopReason.BUDGET
                if stopped:
                    continue  # later stages are planned (and reported) but their calls wait for resume
                report = self.run_calls(stage, resuming=resuming)
                if report.stopped_by == StopReason.SIGNAL:
                    return self._interrupted()
                if report.stopped_by == StopReason.STORE:
                    # Nothing more is sent while responses cannot be kept; what was paid for is kept in memory
                    # or the spill folder and stored first by the next run.
                    self.last_message = f"stopped: {report.messages[-1]}"
                    print(f"assay: {self.last_message}. Then: assay resume {self.experiment}", file=sys.stderr)
                    return 1
                if report.stopped_by == StopReason.BUDGET:
                    stopped = StopReason.BUDGET
            return self._analyse(stopped)

    def _prepare(self, segment: Segment) -> bool:
        """Run a segment job; True when a failed blocking check (the budget) stopped it."""
        result = self._execute(segment_job_name(self.context.config, segment))
        if segment.call_stage is not None:
            self._print_estimate(segment.call_stage, result.run_id)
        failed_check = self._failed_check(result)
        if failed_check:
            print(f"assay: error: {failed_check}", file=sys.stderr)
            return True
        if not result.success:
            raise ConfigError(self._failure_text(result))
        return False

    def _print_estimate(self, stage: CallStage, run_id: str) -> None:
        """`estimated $X for N calls (priced: model)`, from the plan this run just materialized (before any call)."""
        key = AssetKey([self.context.config.asset_prefix, stage.plan_asset])
        event = self.instance.get_latest_materialization_event(key)
        materialization = event.asset_materialization if event is not None else None
        if event is None or materialization is None or event.run_id != run_id:
            return  # the plan step failed: the failure is reported instead
        values = {name: entry.value for name, entry in materialization.metadata.items()}
        to_send = int(str(values.get("calls", 0))) - int(str(values.get("already_stored", 0)))
        if to_send <= 0 and stage.name != self.graph.call_stages[0].name:
            return  # nothing to send in a later stage (e.g. no answer needs repair): no line
        cost = float(str(values.get("estimated_cost_usd", 0.0)))
        print(
            f"assay: {stage.name}: estimated ${cost:.4f} for {to_send} calls (priced: {values.get('priced_models')})",
            flush=True,
        )

    def _analyse(self, stopped: StopReason) -> int:
        analysis = [segment for segment in self.graph.segments() if segment.call_stage is None][0]
        result = self._execute(segment_job_name(self.context.config, analysis))
        statuses = run_status(self.context)
        folder = self.context.work_dir / "latest_run_folder"
        self._audit_calls()
        if result.success and folder.exists():
            print(f"assay: run folder: {folder.read_text().strip()}")
            append_audit(self._audit_path, REPORT_WRITTEN, {"run_folder": folder.read_text().strip()})
        elif not result.success:
            self.last_message = f"analysis failed: {self._failure_text(result)}"
            print(f"assay: error: {self.last_message}", file=sys.stderr)
        for status in statuses:
            print(f"assay: {status.stage}: {status.done}/{status.planned} calls done, spend ${status.spent_usd:.4f}")
        missing = sum(status.missing for status in statuses)
        if missing:
            reason = "the budget ran out" if stopped == StopReason.BUDGET else f"{missing} calls are missing"
            self.last_message = f"{reason}. Resume with: assay resume {self.experiment}"
            print(f"assay: {self.last_message}", file=sys.stderr)
            return 1
        return 0 if result.success else 2

    def _interrupted(self) -> int:
        statuses = run_status(self.context)
        done = sum(status.done for status in statuses)
        planned = sum(status.planned for status in statuses)
        self.last_message = f"interrupted: {done}/{planned} calls stored, none lost"
        print(f"assay: {self.last_message}. Resume with: assay resume {self.experiment}", file=sys.stderr)
        return 130

    def targets(self, stage: str, *, resuming: bool) -> list[str]:
        """Partition keys still to do: unanswered, or answered but never recorded in Dagster.

        A fresh `run` also asks again the calls a fallback model answered (their own model may be back);
        `resume` only fills in what has no answer at all.
        """
        plan = load_plan(self.context, stage)
        if plan is None:
            return []
        done = self.context.store.answered_ids() if resuming else self.context.store.stored_ids()
        materialized = self.instance.get_materialized_partitions(self._responses_key(stage))
        return [call.key for call in plan.calls if call.call_id not in done or call.key not in materialized]

    def run_calls(self, stage: CallStage, *, resuming: bool = False) -> CallsReport:
        """Range runs of the stage's calls job over `targets()`."""
        report = CallsReport()
        targets = self.targets(stage.name, resuming=resuming)
        report.targeted = len(targets)
        if not targets:
            return report
        name = partitions_name(self.context.config, stage.name)
        ordered = list(self.instance.get_dynamic_partitions(name))
        ranges = contiguous_ranges(ordered, targets, self.context.config.run.batch_size)
        self._progress = _Progress(stage.name, len(targets), self.context.config.budget.max_cost_usd)
        try:
            for start, end in ranges:
                tags = {ASSET_PARTITION_RANGE_START_TAG: start, ASSET_PARTITION_RANGE_END_TAG: end}
                result = self._execute(calls_job_name(self.context.config, stage.name), tags)
                report.runs += 1
                if not result.success:
                    report.runs_failed += 1
                    report.messages.append(self._failure_text(result))
                    reason = self._stop_reason(result)
                    if reason in (StopReason.BUDGET, StopReason.SIGNAL, StopReason.STORE):
                        report.stopped_by = reason
                        break
        finally:
            self._progress.close()
            self._progress = None
            self.compact_partitions(stage.name)
        return report

    def compact_partitions(self, stage: str) -> int:
        """Keep the stage's unanswered partitions together at the end (see jobs/partition_order.py)."""
        return keep_unanswered_together(self.instance, self.context, stage)

    def mark_dead_runs_failed(self) -> int:
        """Report runs of this experiment that are still 'started' but whose process is gone as failed."""
        runs = self.instance.get_runs(
            filters=RunsFilter(statuses=ACTIVE_STATUSES, tags={RUN_TAG_EXPERIMENT: self.name})
        )
        marked = 0
        for run in runs:
            pid = run.tags.get(RUN_TAG_PID)
            if pid and pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
                self.instance.report_run_failed(run, f"process {pid} died (found by assay resume)")
                marked += 1
        return marked

    def failed_partitions(self, stage: str) -> set[str]:
        """Call partitions of `stage` that Dagster shows as FAILED."""
        from dagster import DynamicPartitionsDefinition
        from dagster._core.definitions.partitions.context import partition_loading_context
        from dagster._core.storage.partition_status_cache import get_and_update_asset_status_cache_value

        partitions_def = DynamicPartitionsDefinition(name=partitions_name(self.context.config, stage))
        with partition_loading_context(dynamic_partitions_store=self.instance):
            value = get_and_update_asset_status_cache_value(self.instance, self._responses_key(stage), partitions_def)
            if value is None:
                return set()
            subset = value.deserialize_failed_partition_subsets(partitions_def)
            return set(subset.get_partition_keys())

    # -- Dagster plumbing -------------------------------------------------------------------------------
    def _responses_key(self, stage: str) -> AssetKey:
        return AssetKey([self.context.config.asset_prefix, f"{stage}_responses"])

    def _on_outcome(self, outcome: CallOutcome) -> None:
        if self._progress is not None:
            self._progress.update(outcome)

    def _execute(self, job_name: str, extra_tags: dict[str, str] | None = None) -> Any:
        repository = ReconstructableRepository.for_module("definitions", "defs", working_directory=str(REPO_ROOT))
        tags = {RUN_TAG_PID: str(os.getpid()), RUN_TAG_EXPERIMENT: self.name, **(extra_tags or {})}
        run_config = {
            "resources": {"assay": {"config": {"overrides": self.overrides}}},
            # Dagster logs every call's event at DEBUG; the command prints its own progress instead.
            # Dagster logs every call's event at DEBUG and a failed step with its stack trace at ERROR; the command
            # prints its own progress and one line per problem instead (ASSAY_LOG_LEVEL=INFO shows Dagster's).
            "loggers": {"console": {"config": {"log_level": os.environ.get("ASSAY_LOG_LEVEL", "CRITICAL")}}},
        }
        return execute_job(
            ReconstructableJob(repository, job_name),
            instance=self.instance,
            run_config=run_config,
            tags=tags,
            raise_on_error=False,
        )

    @staticmethod
    def _stop_reason(result: Any) -> StopReason:
        """Why a calls run stopped, from the typed Failure metadata its responses step raised."""
        for event in result.all_events:
            if event.event_type == DagsterEventType.STEP_FAILURE and event.step_failure_data.user_failure_data:
                entry = event.step_failure_data.user_failure_data.metadata.get(STOPPED_BY)
                if entry is not None:
                    return StopReason(entry.value)
        return StopReason.FAILURES

    @staticmethod
    def _failure_text(result: Any) -> str:
        messages = []
        for event in result.all_events:
            if event.event_type == DagsterEventType.STEP_FAILURE:
                error = event.step_failure_data.error
                user = (
                    error.cause
                    if error and error.cls_name == "DagsterExecutionStepExecutionError" and error.cause
                    else error
                )
                text = (
                    event.step_failure_data.user_failure_data.description
                    if event.step_failure_data.user_failure_data
                    else None
                )
                message = text or (user.message.strip() if user else "step failed")
                # Our own errors already say what was wrong and how to fix it: drop the class path.
                messages.append(re.sub(r"^pipeline(\.\w+)+: ", "", message))
        return "; ".join(messages) or "see the run's logs in the Dagster UI (assay ui)"

    @staticmethod
    def _failed_check(result: Any) -> str:
        for event in result.all_events:
            if event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
                evaluation = event.event_specific_data
                if not evaluation.passed:
                    return evaluation.description or f"asset check {evaluation.check_name} failed"
        return ""


PROGRESS_LINE_EVERY_S = 30.0
"""Without a terminal bar, a progress line at least this often (and every 500 calls)."""


def pace_and_eta(done: int, total: int, elapsed_s: float) -> str:
    """'12.5 calls/s, eta 3m20s' (or 's/call' below one call a second): the rate so far and the time left."""
    if done <= 0:
        return "eta ?"
    elapsed = max(1e-6, elapsed_s)
    rate = done / elapsed
    pace = f"{rate:.1f} calls/s" if rate >= 1 else f"{elapsed / done:.1f} s/call"
    return f"{pace}, eta {duration((total - done) / rate)}"


class _Progress:
    """A terminal progress bar with ETA and live spend (rich), fed with each call's outcome."""

    def __init__(self, stage: str, total: int, budget: float | None) -> None:
        self.stage = stage
        self.total = total
        self.budget = budget
        self.spent = 0.0
        self.done = 0
        self.failed = 0
        self.started = time.monotonic()
        self._last_line = self.started
        self._bar: Any = None
        if sys.stderr.isatty() and total >= 20:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn(f"{stage} calls"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.description}"),
            )
            self._task = self._bar.add_task("", total=total)
            self._bar.start()

    def update(self, outcome: CallOutcome) -> None:
        """Count one outcome."""
        self.done += 1
        if outcome.result is not None:
            self.spent += outcome.result.cost_usd
        else:
            self.failed += 1
        now = time.monotonic()
        pace = pace_and_eta(self.done, self.total, now - self.started)
        if self._bar is not None:
            budget = f" of ${self.budget:.2f}" if self.budget is not None else ""
            self._bar.update(
                self._task, advance=1, description=f"{pace}, ${self.spent:.4f}{budget}, {self.failed} failed"
            )
        # Every 500 calls, and every half minute for slow (local) models that would otherwise stay silent.
        elif self.done % 500 == 0 or self.done == self.total or now - self._last_line >= PROGRESS_LINE_EVERY_S:
            self._last_line = now
            print(f"  {self.stage} calls {self.done}/{self.total}, {pace}, spend ${self.spent:.4f}", flush=True)

    def close(self) -> None:
        """Stop the bar."""
        if self._bar is not None:
            self._bar.stop()
