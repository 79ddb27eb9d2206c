"""CallRunner: send many calls concurrently and hand each outcome back the moment it is stored.

The calls run on an asyncio loop in a background thread; the caller iterates outcomes in its own thread.
That split lets an orchestrator record each finished call (a Dagster event write costs milliseconds) while
the other calls are still on the wire. Stopping (budget exhausted, a response that cannot be stored,
SIGINT/SIGTERM, or the consumer going away) means: no new calls start, calls in flight finish and are stored
(or kept, when the store cannot take them), then iteration ends.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from pipeline.calls import CallSpec
from pipeline.llm.client import CallResult, LLMClient
from pipeline.llm.errors import AssayError, BudgetExceeded, StoreWriteFailed

DEFAULT_MAX_IN_FLIGHT = 512  # upper bound on tasks alive at once


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
    stopped_by: str = ""  # '' | 'budget' | 'store' (a response could not be stored) | 'signal'
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


# Listeners called with every outcome in the consumer's thread. The `assay` command runs Dagster in its own
# process and registers its progress bar here; nothing else should need it.
progress_listeners: list[Callable[[CallOutcome], None]] = []

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
                summary.stopped_by = summary.stopped_by or "budget"
                stop.set()
                outcomes.put(CallOutcome(spec.call_id, None, str(exc), "BudgetExceeded"))
            except StoreWriteFailed as exc:
                # Like a budget stop: nothing new starts, calls in flight finish (their bytes are kept too).
                summary.stopped_by = summary.stopped_by or "store"
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
                    summary.stopped_by = summary.stopped_by or "signal"
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
                for listener in progress_listeners:
                    listener(item)
                yield item
        finally:
            # Consumer gone or interrupted: start nothing new, let calls in flight land in the store.
            if worker.is_alive():
                if not summary.stopped_by:
                    summary.stopped_by = "signal"
                stop.set()
                worker.join()
        summary.not_started += max(
            0, summary.planned - summary.sent - summary.from_store - summary.failed - summary.not_started
        )
