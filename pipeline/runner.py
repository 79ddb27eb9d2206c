"""CallRunner: send many calls concurrently and hand each outcome back the moment it is stored.

The calls run on an asyncio loop in a background thread; the caller iterates outcomes in its own thread.
That split lets an orchestrator record each finished call (a Dagster event write costs milliseconds) while
the other calls are still on the wire. Stopping (budget exhausted, a response that cannot be stored,
SIGINT/SIGTERM, or the consumer going away) means: no new calls start, calls in flight finish and are stored
(or kept, when the store cannot take them), then iteration ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from pipeline.calls import CallSpec
from pipeline.llm.client import CallResult, LLMClient
from pipeline.llm.errors import AssayError, BudgetExceeded, StoreWriteFailed

if TYPE_CHECKING:
    from pipeline.worker import WarmWorker

DEFAULT_MAX_IN_FLIGHT = 512  # upper bound on tasks alive at once


class StopReason(StrEnum):
    """Why a batch of calls ended before every call had an answer."""

    NONE = ""
    BUDGET = "budget"
    STORE = "store"
    """A response could not be made durable (a full disk): nothing new starts; kept bytes are saved later."""
    SIGNAL = "signal"
    FAILURES = "failures"


@dataclass(frozen=True)
class CallOutcome:
    """What happened to one call: a result, or an error with its type."""

    call_id: str
    result: CallResult | None
    error: str = ""
    error_type: str = ""

    @property
    def ok(self) -> bool:
        """True when the call has a stored answer."""
        return self.result is not None


@dataclass
class RunSummary:
    """Counts of one `CallRunner.run`."""

    planned: int = 0
    sent: int = 0
    from_store: int = 0
    failed: int = 0
    not_started: int = 0
    spent_usd: float = 0.0
    stopped_by: str = StopReason.NONE
    errors: dict[str, int] = field(default_factory=dict)

    def add(self, outcome: CallOutcome) -> None:
        """Count one outcome."""
        if outcome.result is not None:
            if outcome.result.from_store:
                self.from_store += 1
            else:
                self.sent += 1
                self.spent_usd += outcome.result.cost_usd
        elif outcome.error_type in ("BudgetExceeded", "StoreUnavailable"):
            self.not_started += 1
        else:
            self.failed += 1
            self.errors[outcome.error_type] = self.errors.get(outcome.error_type, 0) + 1


@dataclass(frozen=True)
class RunHooks:
    """What the process that starts a run hands to the call steps it executes in the same thread.

    Attributes:
        on_outcome: called with every call's outcome (the `assay` command's progress bar).
        warm_worker: a call worker process started early, for the first large batch to take.
    """

    on_outcome: Callable[[CallOutcome], None] | None = None
    warm_worker: WarmWorker | None = None


# Scoped to the code that sets it (the launcher executes Dagster's in-process steps in its own thread and
# context), so nothing global is mutated and a step run elsewhere simply sees no hooks.
_HOOKS: ContextVar[RunHooks | None] = ContextVar("assay_run_hooks", default=None)


def current_hooks() -> RunHooks:
    """The hooks of the code executing this step (empty when none were given)."""
    return _HOOKS.get() or RunHooks()


@contextlib.contextmanager
def use_hooks(hooks: RunHooks) -> Iterator[None]:
    """Give `hooks` to the call steps executed inside this block."""
    token = _HOOKS.set(hooks)
    try:
        yield
    finally:
        _HOOKS.reset(token)


_DONE = object()


class CallRunner:
    """Runs CallSpecs through an LLMClient with bounded concurrency; see the module docstring."""

    def __init__(self, client: LLMClient, *, max_in_flight: int | None = None) -> None:
        self.client = client
        self.max_in_flight = max_in_flight
        self.summary = RunSummary()

    def _in_flight_cap(self, specs: Sequence[CallSpec]) -> int:
        # Start only as many calls as the models can have in flight: a started call waits in its model's
        # limiter, and a stop must leave the calls not yet sent unstarted (each alias's fallbacks count too).
        if self.max_in_flight is not None:
            return self.max_in_flight
        aliases = {spec.alias for spec in specs}
        for alias in list(aliases):
            aliases.update(self.client.zoo.get(alias).fallbacks)
        capacity = sum(self.client.zoo.get(alias).limits.max_concurrent for alias in aliases)
        return max(1, min(DEFAULT_MAX_IN_FLIGHT, capacity))

    def run(self, specs: Sequence[CallSpec], stop: threading.Event | None = None) -> Iterator[CallOutcome]:
        """Yield one CallOutcome per started call, in completion order. Sets `self.summary`."""
        stop = stop or threading.Event()
        outcomes: queue.Queue[object] = queue.Queue()
        self.summary = RunSummary(planned=len(specs))
        summary = self.summary

        async def one(spec: CallSpec, slots: asyncio.Semaphore) -> None:
            try:
                outcomes.put(CallOutcome(spec.call_id, await self.client.complete(spec)))
            except BudgetExceeded as exc:
                summary.stopped_by = summary.stopped_by or StopReason.BUDGET
                stop.set()
                outcomes.put(CallOutcome(spec.call_id, None, str(exc), "BudgetExceeded"))
            except StoreWriteFailed as exc:
                # Like a budget stop: nothing new starts, calls in flight finish (their bytes are kept too).
                summary.stopped_by = summary.stopped_by or StopReason.STORE
                stop.set()
                outcomes.put(CallOutcome(spec.call_id, None, str(exc), type(exc).__name__))
            except AssayError as exc:
                outcomes.put(CallOutcome(spec.call_id, None, str(exc), type(exc).__name__))
            except Exception as exc:  # noqa: BLE001 - one broken call must not sink the calls in flight
                outcomes.put(CallOutcome(spec.call_id, None, f"{type(exc).__name__}: {exc}", type(exc).__name__))
            finally:
                slots.release()

        async def main() -> None:
            slots = asyncio.Semaphore(self._in_flight_cap(specs))
            tasks = []
            for spec in specs:
                await slots.acquire()
                if stop.is_set():
                    slots.release()
                    summary.stopped_by = summary.stopped_by or StopReason.SIGNAL
                    break
                tasks.append(asyncio.create_task(one(spec, slots)))
            await asyncio.gather(*tasks)

        def loop_thread() -> None:
            try:
                asyncio.run(main())
            except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer's thread
                outcomes.put(exc)
            finally:
                outcomes.put(_DONE)

        worker = threading.Thread(target=loop_thread, name="assay-calls", daemon=True)
        worker.start()
        try:
            while True:
                item = outcomes.get()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, CallOutcome)
                summary.add(item)
                yield item
        finally:
            # Consumer gone or interrupted: start nothing new, let calls in flight land in the store.
            if worker.is_alive():
                if not summary.stopped_by:
                    summary.stopped_by = StopReason.SIGNAL
                stop.set()
                worker.join()
        summary.not_started += max(
            0, summary.planned - summary.sent - summary.from_store - summary.failed - summary.not_started
        )
