"""End-to-end overhead of the Dagster pipeline against bare litellm, measured in one run.

The same N calls (distinct prompts) go to the fake OpenAI server (a separate process, fixed latency):
  (a) bare `litellm.acompletion` behind an asyncio.Semaphore(concurrency), before and after (b); the faster
      of the two runs is the baseline;
  (b) `assay run` end to end (a subprocess: plan run, call-range runs with one Dagster materialization per
      call, analysis run with report) on a fresh SQLite instance, and optionally on PostgreSQL.
Prints calls/s of each, the ratio (b)/(a), and Dagster's bookkeeping per call: the time `assay run` spends
beyond what the calls themselves took, divided by N.

    python benchmarks/pipeline_overhead.py --calls 5000 --concurrency 64 --latency 0.05 [--postgres]
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


def write_items(path: Path, n: int) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        for index in range(n):
            writer.writerow([f"b{index:05d}", f"Benchmark text {index}: the match was rained off."])


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
    args = parser.parse_args()

    server = start_fake_server_process(latency=args.latency)
    root = Path(tempfile.mkdtemp(prefix="assay-bench-"))
    try:
        items = root / "items.csv"
        write_items(items, args.calls)
        # Bare litellm before and after the assay runs; the faster of the two is the baseline (the machine
        # is shared and its speed drifts: the conservative choice never flatters Assay).
        bare_before = asyncio.run(bare_litellm(server.base_url, args.calls, args.concurrency, tag=f"a{time.time()}"))
        results = []
        sqlite_dir = root / "sqlite"
        sqlite_dir.mkdir()
        wall, span = assay_run(server.base_url, items, args.concurrency, sqlite_dir, None)
        results.append(("assay run (SQLite)", wall, span))
        if args.postgres:
            pg_dir = root / "pg"
            pg_dir.mkdir()
            wall, span = assay_run(server.base_url, items, args.concurrency, pg_dir, postgres_home(root))
            results.append(("assay run (PostgreSQL)", wall, span))
        bare_after = asyncio.run(bare_litellm(server.base_url, args.calls, args.concurrency, tag=f"b{time.time()}"))
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)

    n = args.calls
    bare_s = min(bare_before, bare_after)
    results.insert(0, ("bare litellm", bare_s, None))
    print(f"{n} calls, fake server latency {args.latency * 1000:.0f} ms, concurrency {args.concurrency}")
    print(f"bare litellm before the assay runs {bare_before:.2f} s, after {bare_after:.2f} s (the faster is used)")
    print(f"{'':24} {'wall s':>8} {'calls/s':>9} {'vs bare':>8} {'calls span s':>13} {'bookkeeping ms/call':>20}")
    for label, wall, span in results:
        ratio = bare_s / wall
        span_text = f"{span:13.2f}" if span is not None else f"{'':13}"
        overhead = f"{(wall - span) / n * 1000:20.2f}" if span is not None else f"{'':20}"
        print(f"{label:24} {wall:8.2f} {n / wall:9.1f} {ratio:8.2f} {span_text} {overhead}")
    print("vs bare = calls/s relative to bare litellm; bookkeeping = (wall - span of the calls) / calls:")
    print("process start-up, planning, Dagster runs and events not hidden behind the calls, analysis, report.")


if __name__ == "__main__":
    main()
