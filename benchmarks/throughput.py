"""Throughput of Assay's call layer against bare litellm, on the fake OpenAI server.

Starts the fake server as a subprocess (so it does not share this process's GIL), then runs, in one process:

  (a) bare `litellm.acompletion` behind an `asyncio.Semaphore(concurrency)`;
  (b) `LLMClient.complete` with a fresh ResponseStore (store lookup, budget, limiter, retry wrapper,
      trace, durable group-committed write) and the `fake` alias limited to `concurrency` calls in flight;

each on `--calls` distinct prompts (in `--rounds` alternating rounds, so drifting machine load hits both
phases alike), and prints calls/s of both, the ratio b/a (target >= 0.8) and the
arrival-to-durable latency of store writes (from litellm handing back the response to the store writer
acknowledging the group commit that made its record durable, i.e. the window in which a crash loses a
paid-for answer), p50/p99/max (target p99 << 500 ms), and the CPU the store writer process used.

    python benchmarks/throughput.py [--calls 5000] [--concurrency 64] [--latency 0.05] [--rounds 5]
                                    [--profile out.prof] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline: use litellm's bundled price map

from pipeline.calls import CallSpec  # noqa: E402
from pipeline.config import ModelConfig, load_model_zoo  # noqa: E402
from pipeline.llm.client import LLMClient  # noqa: E402
from pipeline.llm.retry import RetryPolicy  # noqa: E402
from pipeline.store import ResponseStore  # noqa: E402
from tests.fakes.openai_server import start_fake_server_process  # noqa: E402

NO_KEY = "assay-no-key"


@dataclass(frozen=True)
class PhaseResult:
    """One measured phase: how many calls, how long, how many failed."""

    name: str
    calls: int
    seconds: float
    errors: int
    cpu_s: float
    """CPU time of this whole process (all threads) during the phase: robust to other load on the machine."""

    @property
    def calls_per_s(self) -> float:
        """Completed calls per second of wall time."""
        return self.calls / self.seconds if self.seconds > 0 else float("nan")

    @property
    def cpu_ms_per_call(self) -> float:
        """Process CPU milliseconds per call."""
        return self.cpu_s / self.calls * 1e3 if self.calls else float("nan")


@dataclass(frozen=True)
class LatencySummary:
    """Percentiles of arrival-to-durable latency, in milliseconds."""

    count: int
    p50_ms: float
    p99_ms: float
    max_ms: float


class TimedClient(LLMClient):
    """An LLMClient that notes when each response arrives from litellm (the last attempt's arrival wins)
    and when its record became durable (the end of the writer process's commit, as it reports)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.arrivals: dict[str, float] = {}
        self.durable_s: list[float] = []
        self._writer.durable_listener = self._durable

    def _durable(self, paths: list[str], committed_at: float) -> None:
        for path in paths:
            self.durable_s.append(committed_at - self.arrivals[Path(path).stem])

    async def _send(self, spec: CallSpec, config: ModelConfig, key: str) -> Any:
        response = await super()._send(spec, config, key)
        self.arrivals[spec.call_id] = time.monotonic()
        return response


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of another process so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def prompts(tag: str, count: int) -> list[list[dict[str, str]]]:
    """`count` distinct one-message conversations of realistic length."""
    return [
        [
            {"role": "system", "content": "Classify the product into the taxonomy. Answer with the category id."},
            {"role": "user", "content": f"[{tag} {index}] Stainless steel kettle, 1.7 l, 2200 W, auto shut-off."},
        ]
        for index in range(count)
    ]


async def bare_litellm(base_url: str, conversations: list[list[dict[str, str]]], concurrency: int) -> PhaseResult:
    """(a): litellm.acompletion under a semaphore, nothing else."""
    import litellm

    gate = asyncio.Semaphore(concurrency)
    errors = 0

    async def one(messages: list[dict[str, str]]) -> None:
        nonlocal errors
        async with gate:
            try:
                await litellm.acompletion(
                    model="openai/fake-model",
                    messages=messages,
                    api_base=base_url,
                    api_key=NO_KEY,
                    timeout=30,
                    num_retries=0,
                    max_retries=0,
                    temperature=0.0,
                    max_tokens=512,
                    seed=0,
                )
            except Exception:  # noqa: BLE001 - counted and reported; a benchmark must finish
                errors += 1

    begun, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one(messages) for messages in conversations))
    seconds, cpu_s = time.perf_counter() - begun, time.process_time() - cpu
    return PhaseResult("bare litellm", len(conversations), seconds, errors, cpu_s)


async def assay_client(client: LLMClient, conversations: list[list[dict[str, str]]]) -> PhaseResult:
    """(b): LLMClient.complete, every response written durably before the call returns."""
    specs = [client.spec_for("fake", messages) for messages in conversations]
    begun, cpu = time.perf_counter(), time.process_time()
    outcomes = await asyncio.gather(*(client.complete(spec) for spec in specs), return_exceptions=True)
    seconds, cpu_s = time.perf_counter() - begun, time.process_time() - cpu
    errors = sum(isinstance(outcome, BaseException) for outcome in outcomes)
    return PhaseResult("assay LLMClient", len(specs), seconds, errors, cpu_s)


def combine(name: str, parts: list[PhaseResult]) -> PhaseResult:
    """One phase's rounds as a single result (calls and seconds summed)."""
    return PhaseResult(
        name,
        sum(p.calls for p in parts),
        sum(p.seconds for p in parts),
        sum(p.errors for p in parts),
        sum(p.cpu_s for p in parts),
    )


def summarize(samples_s: list[float]) -> LatencySummary:
    """p50 / p99 / max in ms (p99 by the nearest-rank method)."""
    if not samples_s:
        return LatencySummary(0, float("nan"), float("nan"), float("nan"))
    ordered = sorted(samples_s)
    p99 = ordered[min(len(ordered) - 1, max(0, int(round(0.99 * len(ordered))) - 1))]
    return LatencySummary(len(ordered), statistics.median(ordered) * 1e3, p99 * 1e3, ordered[-1] * 1e3)


def main(argv: list[str] | None = None) -> int:
    """Run both phases and print the figures; exit status 1 if a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=5000, help="distinct prompts per phase (default 5000)")
    parser.add_argument("--concurrency", type=int, default=64, help="calls in flight (default 64)")
    parser.add_argument("--latency", type=float, default=0.05, help="fake server latency in s (default 0.05)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per phase (default 5)")
    parser.add_argument("--store-root", type=Path, default=None, help="store folder (default: a temp dir)")
    parser.add_argument("--profile", type=Path, default=None, help="write a cProfile of phase (b) here")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = parser.parse_args(argv)
    if args.calls < 1 or args.concurrency < 1 or args.rounds < 1 or args.latency < 0:
        parser.error("--calls, --concurrency and --rounds must be >= 1 and --latency >= 0")

    store_root = args.store_root or Path(tempfile.mkdtemp(prefix="assay-bench-store-"))
    if store_root.exists() and any(store_root.iterdir()):  # the measured store is store_root itself
        parser.error(f"--store-root {store_root} is not empty; the benchmark needs a fresh store")
    server = start_fake_server_process(latency=args.latency)
    try:
        os.environ["ASSAY_FAKE_BASE_URL"] = server.base_url
        zoo = load_model_zoo(overrides=[f"models.fake.limits.max_concurrent={args.concurrency}"])
        store = ResponseStore(store_root)
        client = TimedClient(zoo, store, retry=RetryPolicy(base_s=0.05))

        async def run_all() -> tuple[PhaseResult, PhaseResult]:
            # Warm-up: litellm's first calls import and build clients; not part of either figure.
            await bare_litellm(server.base_url, prompts("warm-up a", 2 * args.concurrency), args.concurrency)
            await assay_client(
                LLMClient(zoo, ResponseStore(store_root / "warm-up")), prompts("warm-up b", 2 * args.concurrency)
            )
            # The phases alternate in rounds, each going first every other round, so that a change in
            # machine load (other processes) lands on both alike instead of skewing the ratio.
            bare_prompts, our_prompts = prompts("bare", args.calls), prompts("assay", args.calls)
            size = -(-args.calls // args.rounds)
            bare_parts: list[PhaseResult] = []
            our_parts: list[PhaseResult] = []
            profiler = cProfile.Profile() if args.profile else None
            for index, start in enumerate(range(0, args.calls, size)):
                for phase in ("bare", "ours") if index % 2 == 0 else ("ours", "bare"):
                    if phase == "bare":
                        chunk = bare_prompts[start : start + size]
                        bare_parts.append(await bare_litellm(server.base_url, chunk, args.concurrency))
                        continue
                    if profiler:
                        profiler.enable()
                    our_parts.append(await assay_client(client, our_prompts[start : start + size]))
                    if profiler:
                        profiler.disable()
            if profiler:
                profiler.dump_stats(args.profile)
            return combine("bare litellm", bare_parts), combine("assay LLMClient", our_parts)

        bare, ours = asyncio.run(run_all())
        sent = server.total()
        writer_cpu_s = process_cpu_s(client._writer._child.pid) if client._writer._child else 0.0
        client.close()
    finally:
        server.stop()

    stored = len(store.stored_ids())  # the warm-up store lives in its own subfolder, not counted here
    durable = summarize(client.durable_s)
    ratio = ours.calls_per_s / bare.calls_per_s
    print(
        f"fake server: subprocess, latency {args.latency * 1e3:.0f} ms; {args.calls} calls per phase in "
        f"{args.rounds} alternating rounds, concurrency {args.concurrency}; {os.cpu_count()} CPUs"
    )
    ceiling = args.concurrency / args.latency if args.latency > 0 else float("inf")
    print(f"(ceiling at this latency and concurrency: {ceiling:.0f} calls/s)")
    for phase in (bare, ours):
        print(
            f"  {phase.name:16s} {phase.calls_per_s:8.1f} calls/s  ({phase.seconds:.2f} s, {phase.errors} errors; "
            f"{phase.cpu_ms_per_call:.2f} ms CPU per call)"
        )
    print(f"  ratio b/a        {ratio:8.3f}   (target >= 0.8)")
    print(f"  CPU ratio a/b    {bare.cpu_ms_per_call / ours.cpu_ms_per_call:8.3f}   (what b/a tends to when CPU-bound)")
    print(
        f"  store writes, arrival -> durable: p50 {durable.p50_ms:.1f} ms, p99 {durable.p99_ms:.1f} ms, "
        f"max {durable.max_ms:.1f} ms over {durable.count} writes (target p99 << 500 ms)"
    )
    groups = client._writer.groups_sent
    print(
        f"    {groups} groups sent to the store writer process ({args.calls / max(1, groups):.1f} records each); "
        f"its CPU: {writer_cpu_s * 1e3 / args.calls:.2f} ms per call (not in the figures above)"
    )
    print(f"  records stored {stored}/{args.calls}; requests at the server {sent} (incl. warm-up)")
    if args.json:
        print(
            json.dumps(
                {
                    "bare": {**asdict(bare), "calls_per_s": bare.calls_per_s, "cpu_ms_per_call": bare.cpu_ms_per_call},
                    "assay": {**asdict(ours), "calls_per_s": ours.calls_per_s, "cpu_ms_per_call": ours.cpu_ms_per_call},
                    "ratio": ratio,
                    "durable": asdict(durable),
                    "stored": stored,
                }
            )
        )
    if args.store_root is None:
        shutil.rmtree(store_root, ignore_errors=True)
    ok = ratio >= 0.8 and durable.p99_ms < 500 and ours.errors == 0 and stored == args.calls
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
