"""End-to-end overhead of the Dagster pipeline against bare litellm, measured in one run.

The same N calls (distinct prompts) go to the fake OpenAI server (a separate process, fixed latency):
  (a) bare `litellm.acompletion` behind an asyncio.Semaphore(concurrency);
  (b) `assay run` end to end (a subprocess: plan run, call-range runs with one Dagster materialization per
      call, analysis run with report) on a fresh SQLite instance, and optionally on PostgreSQL.
in `--rounds` alternating rounds (machine drift lands on both sides alike). Prints calls/s of each, the
ratio (b)/(a) per round and over all rounds, and Dagster's bookkeeping per call: the time `assay run` spends
beyond what the calls themselves took, divided by N.

    python benchmarks/pipeline_overhead.py --calls 5000 --concurrency 64 --latency 0.05 [--rounds 2] [--postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from tests.fakes.openai_server import start_fake_server_process  # noqa: E402


async def bare_litellm(base_url: str, n: int, concurrency: int, tag: str) -> float:
    import litellm

    litellm.suppress_debug_info = True
    slots = asyncio.Semaphore(concurrency)

    async def one(index: int) -> None:
        async with slots:
            await litellm.acompletion(
                model="openai/fake-model",
                api_base=base_url,
                api_key="bench",
                messages=[{"role": "user", "content": f"{tag} bare call {index}"}],
                max_tokens=20,
                num_retries=0,
            )

    started = time.perf_counter()
    await asyncio.gather(*(one(index) for index in range(n)))
    return time.perf_counter() - started


def write_items(path: Path, n: int, tag: str) -> None:
    # A tag per run: new call ids, so an instance that keeps state (PostgreSQL) starts each run afresh.
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        for index in range(n):
            writer.writerow([f"b{index:05d}", f"Benchmark text {index} ({tag}): the match was rained off."])


def assay_run(
    base_url: str, items: Path, concurrency: int, workdir: Path, dagster_home: Path | None
) -> tuple[float, float]:
    """Wall time of `assay run`, and the span of its calls (first start to last finish, from the store)."""
    env = {key: value for key, value in os.environ.items() if key != "DAGSTER_HOME"}
    env.update(ASSAY_HOME=str(workdir / "home"), ASSAY_RUNS_DIR=str(workdir / "runs"), ASSAY_FAKE_BASE_URL=base_url)
    if dagster_home is not None:
        env["DAGSTER_HOME"] = str(dagster_home)
    command = [
        sys.executable,
        "-m",
        "jobs.cli",
        "run",
        "hello",
        "--model",
        "fake",
        "--input",
        str(items),
        "--set",
        f"models.fake.limits.max_concurrent={concurrency}",
        "--set",
        "budget.max_cost_usd=null",
    ]
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(f"assay run failed:\n{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}")
    from pipeline.store import ResponseStore

    records = list(ResponseStore(workdir / "home" / "store").iter_records())
    first = min(record.started_at for record in records)
    last = max(record.finished_at for record in records)
    from datetime import datetime

    span = (datetime.fromisoformat(last) - datetime.fromisoformat(first)).total_seconds()
    return wall, span


def postgres_home(root: Path) -> Path:
    home = root / "pg_dagster_home"
    home.mkdir()
    shutil.copy(REPO / "configs" / "dagster" / "postgres.yaml", home / "dagster.yaml")
    from jobs.instance import LOCAL_POSTGRES_ENV

    for name, value in LOCAL_POSTGRES_ENV.items():
        os.environ.setdefault(name, value)
    return home


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--postgres", action="store_true", help="also measure on the PostgreSQL instance")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (default 2)")
    args = parser.parse_args()

    server = start_fake_server_process(latency=args.latency)
    root = Path(tempfile.mkdtemp(prefix="assay-bench-"))
    instances = ["SQLite", "PostgreSQL"] if args.postgres else ["SQLite"]
    bare: list[float] = []
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in instances}
    try:
        # The machine is shared and its speed drifts by tens of percent within minutes: bare litellm and
        # the assay runs alternate, bare going first in even rounds and last in odd ones, and the figures
        # are totals over the rounds, so drift lands on both sides alike.
        for round_index in range(args.rounds):
            steps = ["bare", *instances] if round_index % 2 == 0 else [*instances, "bare"]
            for step in steps:
                if step == "bare":
                    tag = f"r{round_index}-{time.time()}"
                    bare.append(asyncio.run(bare_litellm(server.base_url, args.calls, args.concurrency, tag=tag)))
                    continue
                workdir = root / f"{step}-{round_index}"
                workdir.mkdir()
                items = workdir / "items.csv"
                write_items(items, args.calls, tag=f"{step} {round_index} {time.time()}")
                home = postgres_home(workdir) if step == "PostgreSQL" else None
                runs[step].append(assay_run(server.base_url, items, args.concurrency, workdir, home))
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)

    n = args.calls
    latency_ms = args.latency * 1000
    print(f"{n} calls, fake server latency {latency_ms:.0f} ms, concurrency {args.concurrency}, {args.rounds} rounds")
    print(f"{'':32} {'wall s':>8} {'calls/s':>9} {'vs bare':>8} {'calls span s':>13} {'bookkeeping ms/call':>20}")
    for index in range(args.rounds):
        print(f"{f'round {index + 1}: bare litellm':32} {bare[index]:8.2f} {n / bare[index]:9.1f} {1.0:8.2f}")
        for name in instances:
            wall, span = runs[name][index]
            overhead = (wall - span) / n * 1000
            print(
                f"{f'round {index + 1}: assay run ({name})':32} {wall:8.2f} {n / wall:9.1f} {bare[index] / wall:8.2f} "
                f"{span:13.2f} {overhead:20.2f}"
            )
    for name in instances:
        wall = sum(w for w, _ in runs[name])
        span = sum(s for _, s in runs[name])
        calls = n * args.rounds
        print(
            f"all rounds, {name}: {sum(bare) / wall:.2f}x bare litellm ({calls / wall:.1f} vs "
            f"{calls / sum(bare):.1f} calls/s), bookkeeping {(wall - span) / calls * 1000:.2f} ms/call"
        )
    print("vs bare = calls/s relative to bare litellm in the same round; bookkeeping = (wall - span of the calls) /")
    print("calls: process start-up, planning, Dagster runs and events not hidden behind the calls, analysis, report.")


if __name__ == "__main__":
    main()
