"""Run a large batch of calls in a worker process, so the caller's bookkeeping gets its own core.

litellm costs ~5 ms of CPU per call and the client ~2 ms; an orchestrator recording one event per call
costs a few ms more. In one process they share one GIL, and on two cores the calls ran at half the speed
of bare litellm. `ProcessCallRunner` moves the calls (client, litellm, store writes) to a spawned child
and streams each outcome back the moment its response is stored.

The child ignores SIGINT (the parent decides when to stop and sets a shared event: no new calls, calls
in flight finish and are stored) and is killed by the kernel if the parent dies (PR_SET_PDEATHSIG), so a
SIGKILLed run never leaves an orphan sending calls while `assay resume` runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import queue
import signal
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.calls import CallSpec
from pipeline.config import ModelZoo
from pipeline.llm.client import LLMClient
from pipeline.llm.cost import Budget
from pipeline.llm.retry import RetryPolicy
from pipeline.runner import CallOutcome, CallRunner, RunSummary, StopReason
from pipeline.store import ResponseStore

log = logging.getLogger(__name__)

PROCESS_THRESHOLD = 200
"""Batches at least this large go to a worker process; smaller ones are not worth its ~2 s start-up."""
_DONE = "done"
_FAILED = "failed"


@dataclass(frozen=True)
class ClientSettings:
    """What a child needs to rebuild the parent's LLMClient (picklable; keys stay in the environment)."""

    zoo: ModelZoo
    store_root: Path
    budget_limit_usd: float | None
    already_spent_usd: float
    retry: RetryPolicy
    environ: dict[str, str] | None  # None = the process environment (inherited by the child)

    @classmethod
    def of(cls, client: LLMClient) -> ClientSettings:
        """Settings that rebuild `client` elsewhere."""
        environ = None if client.environ is os.environ else dict(client.environ)
        return cls(
            client.zoo,
            client.store.root,
            client.budget.limit_usd,
            client.budget.spent_usd + client.budget.reserved_usd,
            client.retry,
            environ,
        )

    def build(self) -> LLMClient:
        """A new client with the same zoo, store, remaining budget and retry policy."""
        budget = Budget(self.budget_limit_usd, already_spent_usd=self.already_spent_usd)
        return LLMClient(
            self.zoo, ResponseStore(self.store_root), budget=budget, retry=self.retry, environ=self.environ
        )


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def _worker_main(inbox: Any, outcomes: Any, stop: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    try:
        # The slow part of starting (~4 s of imports on 2 cores) comes before the job: a worker started
        # early by `prewarm_worker` does it while the parent is still planning.
        import litellm  # noqa: F401

        job = inbox.get()
        if job is None:  # a warm worker that was not needed
            return
        settings, max_in_flight, spec_records = job
        runner = CallRunner(settings.build(), max_in_flight=max_in_flight)
        try:
            for outcome in runner.run([CallSpec.from_record(record) for record in spec_records], stop):
                outcomes.put(_slim(outcome))
        finally:
            runner.client.close()
        outcomes.put((_DONE, runner.summary))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        outcomes.put((_FAILED, f"{type(exc).__name__}: {exc}"))


@dataclass
class _Worker:
    """A started worker process and its queues, waiting for its job."""

    process: Any
    inbox: Any
    outcomes: Any
    stop: Any

    def alive(self) -> bool:
        return bool(self.process.is_alive())


def _start_worker() -> _Worker:
    context = multiprocessing.get_context("spawn")  # never fork a process that has threads
    inbox: Any = context.Queue()
    outcomes: Any = context.Queue()
    stop = context.Event()
    # The job goes through a queue, not the start-up arguments: spawn writes those into a pipe whose write
    # blocks forever if the child dies before reading it (the parent holds the read end too).
    process = context.Process(target=_worker_main, args=(inbox, outcomes, stop), name="assay-call-worker", daemon=True)
    process.start()
    return _Worker(process, inbox, outcomes, stop)


class WarmWorker:
    """A call worker started ahead of time (its imports overlap with planning); one batch takes it.

    The `assay` command owns it and hands it to the call steps through `pipeline.runner.RunHooks`;
    `discard()` stops it when no batch needed it.
    """

    def __init__(self) -> None:
        self._worker: _Worker | None = _start_worker()

    def take(self) -> _Worker | None:
        """The worker, if still alive; afterwards this object holds none."""
        worker, self._worker = self._worker, None
        return worker if worker is not None and worker.alive() else None

    def discard(self) -> None:
        """Stop the worker if no batch took it (it exits without calling anything)."""
        worker, self._worker = self._worker, None
        if worker is not None and worker.alive():
            worker.inbox.put(None)
            worker.process.join(timeout=10)
            if worker.process.is_alive():
                worker.process.kill()


def _slim(outcome: CallOutcome) -> CallOutcome:
    """The outcome without the bulky parts of its record (request, answer, raw response).

    They are already durable in the store; the parent only records usage, cost and timing, and pickling
    whole records across the pipe cost the parent's core more than the bookkeeping itself.
    """
    if outcome.result is None:
        return outcome
    record = dataclasses.replace(outcome.result.record, request={}, text="", raw_response={})
    return dataclasses.replace(outcome, result=dataclasses.replace(outcome.result, record=record, text=""))


class ProcessCallRunner:
    """CallRunner's interface, with the calls made in a spawned child process.

    Outcomes carry usage, cost and timing but not the answer text (read it from the store).
    """

    def __init__(self, client: LLMClient, *, max_in_flight: int | None = None, warm: WarmWorker | None = None) -> None:
        self.settings = ClientSettings.of(client)
        self.max_in_flight = max_in_flight
        self.summary = RunSummary()
        self.warm = warm

    def run(self, specs: Sequence[CallSpec], stop: threading.Event | None = None) -> Iterator[CallOutcome]:
        """Yield one CallOutcome per started call, in completion order. Sets `self.summary`."""
        worker = (self.warm.take() if self.warm is not None else None) or _start_worker()
        child, outcomes, child_stop = worker.process, worker.outcomes, worker.stop
        worker.inbox.put((self.settings, self.max_in_flight, [spec.to_record() for spec in specs]))
        self.summary = RunSummary(planned=len(specs))
        finished = False
        received = 0
        try:
            while True:
                if stop is not None and stop.is_set():
                    child_stop.set()
                try:
                    item = outcomes.get(timeout=0.1)
                except queue.Empty:
                    if child.is_alive():
                        continue
                    if received == 0:
                        # It could not start (e.g. a __main__ that spawn cannot re-import): do the work here.
                        # Anything it did store is served from the store, never sent again.
                        log.warning(
                            "call worker exited with code %s before any call; calling in process", child.exitcode
                        )
                        fallback = CallRunner(self.settings.build(), max_in_flight=self.max_in_flight)
                        yield from fallback.run(specs, stop)
                        self.summary = fallback.summary
                        finished = True
                        break
                    raise RuntimeError(f"the call worker died (exit code {child.exitcode})") from None
                received += 1
                if isinstance(item, tuple) and item[0] == _DONE:
                    self.summary = item[1]
                    finished = True
                    break
                if isinstance(item, tuple) and item[0] == _FAILED:
                    raise RuntimeError(f"the call worker failed: {item[1]}")
                yield item
        finally:
            if not finished:
                # Consumer gone or interrupted: the child starts nothing new and stores what is in flight.
                child_stop.set()
                self.summary.stopped_by = self.summary.stopped_by or StopReason.SIGNAL
                _drain_until_done(outcomes, child)
            child.join(timeout=60)


def _drain_until_done(outcomes: Any, child: Any) -> None:
    while child.is_alive():
        try:
            item = outcomes.get(timeout=0.2)
        except queue.Empty:
            continue
        if isinstance(item, tuple) and item[0] in (_DONE, _FAILED):
            return


def worker_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """False when ASSAY_CALL_WORKER=0 (every batch is called in process)."""
    return (os.environ if environ is None else environ).get("ASSAY_CALL_WORKER", "1") != "0"


def call_runner_for(
    client: LLMClient, n_calls: int, environ: Mapping[str, str] | None = None, *, warm: WarmWorker | None = None
) -> CallRunner | ProcessCallRunner:
    """A ProcessCallRunner for large batches (>= PROCESS_THRESHOLD, unless ASSAY_CALL_WORKER=0), else CallRunner."""
    if n_calls >= PROCESS_THRESHOLD and worker_enabled(environ) and not getattr(client, "in_process_only", False):
        return ProcessCallRunner(client, warm=warm)
    return CallRunner(client)
