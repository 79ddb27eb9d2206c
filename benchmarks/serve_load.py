"""Load on `assay serve`: N concurrent clients POST /predict on 127.0.0.1 for a bounded time.

Serves the tiny bird-flu artifact (tests/serve_fixtures.py) from a uvicorn subprocess with an SQLite database,
sends texts the cheap tiers settle (the LLM tier is not involved), and prints p50/p95/p99 latency, throughput
and the error rate next to their targets (p95 <= 200 ms, error rate 0). Not reached yet: the same run with the
database restarted mid-run (503 while it is down, nothing acknowledged and lost).

    python benchmarks/serve_load.py [--clients 8] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _settled_texts(artifact_root: Path) -> list[str]:
    """The task's texts the cheap tiers settle (the load must not wait on the LLM tier)."""
    import csv

    from pipeline.serving.artifact import load_artifact
    from pipeline.serving.predictor import Predictor

    predictor = Predictor(load_artifact(artifact_root), None)
    with (REPO / "configs" / "tasks" / "birdflu" / "data.csv").open(encoding="utf-8") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)]
    answers = asyncio.run(predictor.predict(texts))
    return [t for t, a in zip(texts, answers, strict=True) if a.rule != "abstain"]


async def _client(
    base: str, token: str, texts: list[str], stop: float, latencies: list[float], errors: list[int]
) -> None:
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=10) as http:
        i = 0
        while time.monotonic() < stop:
            start = time.perf_counter()
            try:
                response = await http.post("/predict", json={"text": texts[i % len(texts)]})
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - start)
            errors.append(0 if ok else 1)
            i += 1


def main() -> int:
    """Run the load and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    from pipeline.serving.storage import open_database
    from tests.serve_fixtures import pack_tiny

    work = Path(tempfile.mkdtemp(prefix="serve-load-"))
    pack_tiny(work / "artifacts")
    texts = _settled_texts(work / "artifacts")
    url = f"sqlite:///{work / 'serve.db'}"
    token = open_database(url).create_token("load", "predict").token
    port = _free_port()
    env = {**os.environ, "ASSAY_HOME": str(work / "home"), "PYTHONPATH": str(REPO)}
    command = [
        sys.executable,
        "-m",
        "jobs.cli",
        "serve",
        "--artifact",
        str(work / "artifacts"),
        "--database",
        url,
        "--port",
        str(port),
        "--rate",
        "1000000",
    ]
    server = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{base}/healthz", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or server.poll() is not None:
                    print("assay serve did not start")
                    return 1
                time.sleep(0.3)
        latencies: list[float] = []
        errors: list[int] = []
        stop = time.monotonic() + args.seconds

        async def load() -> None:
            await asyncio.gather(*(_client(base, token, texts, stop, latencies, errors) for _ in range(args.clients)))

        asyncio.run(load())
    finally:
        server.terminate()
        server.wait(timeout=30)
    ms = sorted(x * 1000 for x in latencies)
    p50, p95, p99 = (ms[min(len(ms) - 1, int(q * len(ms)))] for q in (0.5, 0.95, 0.99))
    error_rate = sum(errors) / len(errors)
    print(f"{len(texts)} distinct texts, all settled by the cheap tiers (no LLM call)")
    print(f"{args.clients} clients, {args.seconds:.0f} s, {len(ms)} requests, {len(ms) / args.seconds:.1f} req/s")
    print(f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, mean {statistics.fmean(ms):.1f} ms")
    print(f"p95 latency {p95:.1f} ms   target <= 200 ms   {'met' if p95 <= 200 else 'MISSED'}")
    print(f"error rate {error_rate:.4f}   target 0   {'met' if error_rate == 0 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
