"""ExperimentLauncher: what `assay run / resume / status` do with Dagster.

A run is three kinds of Dagster runs on one instance: the plan job (snapshot + call plan, registering one
dynamic partition per call), range runs of the calls job over the partitions still to do (contiguous
ranges in partition order, at most `run.batch_size` each, with the partition-range tags), and the analysis
job. Every run is tagged with this process's pid, so `resume` can tell a run whose process died (still
STARTED in Dagster) from one that is alive, and mark the dead one failed before re-running its calls.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from dagster import AssetKey, DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter, execute_job
from dagster._core.definitions.reconstruct import ReconstructableJob, ReconstructableRepository
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from assets.experiment import calls_partitions_name, job_names
from jobs.instance import get_instance
from pipeline.config import REPO_ROOT
from pipeline.runner import CallOutcome, progress_listeners
from pipeline.session import ExperimentSession
from pipeline.worker import discard_warm_worker

RUN_TAG_PID = "assay/pid"
RUN_TAG_EXPERIMENT = "assay/experiment"
ACTIVE_STATUSES = [DagsterRunStatus.STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.NOT_STARTED]


@dataclass
class LaunchReport:
    """What one `run` or `resume` did."""

    targeted: int = 0
    runs_failed: int = 0
    stopped_by_budget: bool = False
    interrupted: bool = False
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

    def __init__(self, experiment: str, overrides: list[str], instance: DagsterInstance | None = None) -> None:
        self.session = ExperimentSession(experiment, overrides)
        self.experiment = experiment
        self.overrides = overrides
        self.instance = instance or get_instance()
        self.names = job_names(self.session.config)
        self.responses_key = AssetKey([self.session.config.asset_prefix, "llm_responses"])
        self.partitions_name = calls_partitions_name(self.session.config)

    # -- commands ---------------------------------------------------------------------------------------
    def run(self) -> int:
        """Plan, send every call not yet done, analyse. Exit code 0 when every call has a response."""
        try:
            return self._run()
        finally:
            discard_warm_worker()  # started by the command for a large run that turned out not to need it

    def _run(self) -> int:
        name = self.session.config.name
        print(f"assay: {name}: planning (models: {', '.join(self.session.aliases())})", flush=True)
        result = self._execute(self.names["plan"])
        failed_check = self._failed_check(result)  # a failed blocking check also fails the run: say why first
        if failed_check:
            print(f"assay: error: {failed_check}", file=sys.stderr)
            return 2
        if not result.success:
            print(f"assay: error: planning failed: {self._failure_text(result)}", file=sys.stderr)
            return 2
        return self._calls_then_analysis()

    def resume(self) -> int:
        """Mark dead runs failed, then run only the calls that are failed or missing, then analyse."""
        marked = self.mark_dead_runs_failed()
        if marked:
            print(f"assay: marked {marked} run(s) whose process died as FAILED", flush=True)
        try:
            return self._calls_then_analysis()
        finally:
            discard_warm_worker()

    def print_status(self) -> int:
        """Print done / failed / missing calls of the current plan and the spend."""
        status = self.session.status()
        failed = self.failed_partitions() & set(status.missing)
        print(f"{self.session.config.name}: {status.planned} calls planned")
        print(f"  done:    {status.done}")
        print(f"  failed:  {len(failed)}")
        print(f"  missing: {len(status.missing) - len(failed)} (never run)")
        print(f"  spend:   ${status.spent_usd:.4f}")
        if status.missing:
            print(f"  next:    assay resume {self.experiment}")
        return 0

    # -- steps ------------------------------------------------------------------------------------------
    def _calls_then_analysis(self) -> int:
        report = self.run_calls()
        if report.interrupted:
            status = self.session.status()
            print(
                f"assay: interrupted: {status.done}/{status.planned} calls stored, none lost. "
                f"Resume with: assay resume {self.experiment}",
                file=sys.stderr,
            )
            return 130
        result = self._execute(self.names["analysis"])
        status = self.session.status()
        folder = self.session.work_dir / "latest_run_folder"
        if result.success and folder.exists():
            print(f"assay: run folder: {folder.read_text().strip()}")
        elif not result.success:
            print(f"assay: error: analysis failed: {self._failure_text(result)}", file=sys.stderr)
        print(f"assay: {status.done}/{status.planned} calls done, spend ${status.spent_usd:.4f}")
        if status.missing:
            reason = "the budget ran out" if report.stopped_by_budget else f"{len(status.missing)} calls are missing"
            print(f"assay: {reason}. Resume with: assay resume {self.experiment}", file=sys.stderr)
            return 1
        return 0 if result.success else 2

    def targets(self) -> list[str]:
        """Calls of the plan still to do: not stored, or stored but never recorded in Dagster."""
        plan = self.session.load_plan()
        stored = self.session.store.stored_ids()
        materialized = self.instance.get_materialized_partitions(self.responses_key)
        return [key for key in plan.call_ids if key not in stored or key not in materialized]

    def run_calls(self) -> LaunchReport:
        """Range runs of the calls job over `targets()`."""
        report = LaunchReport()
        targets = self.targets()
        report.targeted = len(targets)
        if not targets:
            return report
        ordered = self.instance.get_dynamic_partitions(self.partitions_name)
        ranges = contiguous_ranges(ordered, targets, self.session.config.run.batch_size)
        progress = _Progress(len(targets), self.session.config.budget.max_cost_usd)
        progress_listeners.append(progress.update)
        try:
            for start, end in ranges:
                tags = {ASSET_PARTITION_RANGE_START_TAG: start, ASSET_PARTITION_RANGE_END_TAG: end}
                result = self._execute(self.names["calls"], tags)
                if not result.success:
                    report.runs_failed += 1
                    text = self._failure_text(result)
                    report.messages.append(text)
                    if "budget" in text:
                        report.stopped_by_budget = True
                        break
                    if _interrupted(text):
                        report.interrupted = True
                        break
        finally:
            progress_listeners.remove(progress.update)
            progress.close()
        return report

    def mark_dead_runs_failed(self) -> int:
        """Report runs of this experiment that are still 'started' but whose process is gone as failed."""
        runs = self.instance.get_runs(
            filters=RunsFilter(statuses=ACTIVE_STATUSES, tags={RUN_TAG_EXPERIMENT: self.session.config.name})
        )
        marked = 0
        for run in runs:
            pid = run.tags.get(RUN_TAG_PID)
            if pid and pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
                self.instance.report_run_failed(run, f"process {pid} died (found by assay resume)")
                marked += 1
        return marked

    def failed_partitions(self) -> set[str]:
        """Call partitions Dagster shows as FAILED."""
        from dagster._core.definitions.partitions.context import partition_loading_context
        from dagster._core.storage.partition_status_cache import get_and_update_asset_status_cache_value

        from assets.experiment import build_experiment_definitions

        definitions = build_experiment_definitions(self.experiment)
        with partition_loading_context(dynamic_partitions_store=self.instance):
            value = get_and_update_asset_status_cache_value(
                self.instance, self.responses_key, definitions.calls_partitions
            )
            if value is None:
                return set()
            subset = value.deserialize_failed_partition_subsets(definitions.calls_partitions)
            return set(subset.get_partition_keys())

    # -- Dagster plumbing -------------------------------------------------------------------------------
    def _execute(self, job_name: str, extra_tags: dict[str, str] | None = None) -> Any:
        repository = ReconstructableRepository.for_module("definitions", "defs", working_directory=str(REPO_ROOT))
        tags = {RUN_TAG_PID: str(os.getpid()), RUN_TAG_EXPERIMENT: self.session.config.name, **(extra_tags or {})}
        run_config = {
            "resources": {"assay": {"config": {"overrides": self.overrides}}},
            # Dagster logs every call's event at DEBUG; the command prints its own progress instead.
            "loggers": {"console": {"config": {"log_level": os.environ.get("ASSAY_LOG_LEVEL", "WARNING")}}},
        }
        return execute_job(
            ReconstructableJob(repository, job_name),
            instance=self.instance,
            run_config=run_config,
            tags=tags,
            raise_on_error=False,
        )

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
                messages.append(text or (user.message.strip() if user else "step failed"))
        return "; ".join(messages) or "see the run's logs in the Dagster UI (assay ui)"

    @staticmethod
    def _failed_check(result: Any) -> str:
        for event in result.all_events:
            if event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
                evaluation = event.event_specific_data
                if not evaluation.passed:
                    return evaluation.description or f"asset check {evaluation.check_name} failed"
        return ""


def _interrupted(failure_text: str) -> bool:
    return "interrupted" in failure_text.lower()


class _Progress:
    """A terminal progress bar with ETA and live spend (rich), fed by CallRunner outcomes."""

    def __init__(self, total: int, budget: float | None) -> None:
        self.total = total
        self.budget = budget
        self.spent = 0.0
        self.done = 0
        self.failed = 0
        self.started = time.monotonic()
        self._bar: Any = None
        if sys.stderr.isatty() and total >= 20:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("calls"),
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
        if self._bar is not None:
            budget = f" of ${self.budget:.2f}" if self.budget is not None else ""
            self._bar.update(self._task, advance=1, description=f"${self.spent:.4f}{budget}, {self.failed} failed")
        elif self.done % 500 == 0 or self.done == self.total:
            rate = self.done / max(1e-6, time.monotonic() - self.started)
            eta = (self.total - self.done) / rate if rate else 0
            print(
                f"  calls {self.done}/{self.total}, {rate:.0f}/s, eta {eta:.0f}s, spend ${self.spent:.4f}", flush=True
            )

    def close(self) -> None:
        """Stop the bar."""
        if self._bar is not None:
            self._bar.stop()
