"""Soak: 2,000 calls with every fault class of the fake at once, the run SIGKILLed three times and resumed.

Loopback only, bounded in calls and time. The fake server (its own process) answers 429 with Retry-After,
500, hangs (cut by the client's timeout), non-JSON bodies and garbage content (answers that ignore the
format: they go to the repair stage) on tagged shares of the prompts. `assay run hello` is SIGKILLed at three
random moments and resumed each time, then resumed until it ends. Printed next to their targets:

- calls paid twice: prompts the server answered more than once (target: at most the calls in flight at
  each kill, i.e. 3 x max_concurrent);
- responses lost: planned calls without a stored answer at the end, and records failing their checksum
  (target 0);
- wall time against a fault-free run of the same size.

    python benchmarks/soak.py [--calls 2000] [--concurrency 16] [--seed 0]
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from pipeline.store import ResponseStore  # noqa: E402
from tests.fakes.openai_server import start_fake_server_process  # noqa: E402

TAGS = ("ok", "f429", "f500", "hang", "notjson", "garbage")
KILLS = 3


def write_items(path: Path, n: int, prefix: str) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        for index in range(n):
            writer.writerow([f"{prefix}{index:05d}", f"{prefix} soak text {index} tag-{TAGS[index % len(TAGS)]}."])


def assay(home: Path, base_url: str, *args: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env.update(ASSAY_HOME=str(home / "home"), ASSAY_RUNS_DIR=str(home / "runs"), ASSAY_FAKE_BASE_URL=base_url)
    command = [sys.executable, "-m", "jobs.cli", *args]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_flags(items: Path, concurrency: int) -> list[str]:
    return [
        "--model", "fake", "--input", str(items),
        "--set", f"models.fake.limits.max_concurrent={concurrency}",
        "--set", "models.fake.timeout_s=2", "--set", "models.fake.max_attempts=4",
    ]  # fmt: skip


def inject_faults(server, n: int) -> None:
    share = n // len(TAGS)
    server.inject("429", times=share, match="tag-f429", retry_after=0.2)
    server.inject("500", times=share, match="tag-f500")
    server.inject("hang", times=max(1, share // 4), match="tag-hang")
    server.inject("not_json", times=share, match="tag-notjson")
    server.inject("ignore_format", times=share, match="tag-garbage")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="assay-soak-"))
    server = start_fake_server_process(latency=0.05)
    try:
        # Fault-free baseline, same size, its own store.
        clean_items = work / "clean.csv"
        write_items(clean_items, args.calls, "c")
        started = time.monotonic()
        assert assay(work / "clean", server.base_url, "run", "hello", *run_flags(clean_items, args.concurrency)).wait(
            timeout=1800
        ) in (0, 1)
        clean_wall = time.monotonic() - started

        server.reset()
        items = work / "soak.csv"
        write_items(items, args.calls, "s")
        inject_faults(server, args.calls)
        store = ResponseStore(work / "soak" / "home" / "store")
        started = time.monotonic()
        flags = run_flags(items, args.concurrency)
        command = ["run", "hello", *flags]
        kills = 0
        code = None
        for attempt in range(KILLS + 6):
            process = assay(work / "soak", server.base_url, *command)
            if kills < KILLS:
                target = len(store.stored_ids()) + rng.randint(args.calls // 10, args.calls // 4)
                while process.poll() is None and len(store.stored_ids()) < target:
                    time.sleep(0.05)
                if process.poll() is None:
                    process.send_signal(signal.SIGKILL)
                    process.wait()
                    kills += 1
                    print(f"  kill {kills}: {len(store.stored_ids())} records stored", flush=True)
                    command = ["resume", "hello"]
                    continue
            code = process.wait(timeout=1800)
            command = ["resume", "hello"]
            if code == 0:
                break
            print(f"  attempt {attempt + 1} ended with {code}; resuming", flush=True)
        soak_wall = time.monotonic() - started

        stats = server.stats()
        answered = stats.get("answered_ok", {})
        paid_twice = sum(count - 1 for count in answered.values() if count > 1)
        from pipeline.call_stages import needed_call_ids, run_status
        from pipeline.context import ExperimentContext

        os.environ["ASSAY_HOME"] = str(work / "soak" / "home")
        context = ExperimentContext("hello", ["models=[fake]"])
        missing = sum(status.missing for status in run_status(context))
        corrupt = sum(
            1
            for call_id in needed_call_ids(context)
            if store.record_path(call_id).exists() and store.get_answer(call_id) is None
        )
        allowed_twice = KILLS * args.concurrency
        faulty = f"{len(TAGS) - 1}/{len(TAGS)}"
        print(f"soak: {args.calls} calls, faults on {faulty} of the prompts, {kills} SIGKILLs, exit {code}")
        print(f"{'figure':<34}{'measured':>12}{'target':>16}")
        print(f"{'calls paid twice':<34}{paid_twice:>12}{'<= ' + str(allowed_twice):>16}  "
              f"{'ok' if paid_twice <= allowed_twice else 'MISSED'}")  # fmt: skip
        print(f"{'responses lost (missing at end)':<34}{missing:>12}{'0':>16}  {'ok' if missing == 0 else 'MISSED'}")
        print(f"{'records failing their checksum':<34}{corrupt:>12}{'0':>16}  {'ok' if corrupt == 0 else 'MISSED'}")
        print(f"{'wall time, faults + kills (s)':<34}{soak_wall:>12.1f}")
        print(f"{'wall time, fault-free (s)':<34}{clean_wall:>12.1f}{'':>16}  ratio {soak_wall / clean_wall:.2f}")
        return 0 if paid_twice <= allowed_twice and missing == 0 and corrupt == 0 else 1
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
