"""Bad input at the command line: one clear line (the value, what was expected, the fix), the right exit
code, no traceback; and an error that is not one of ours: one line naming the log with its traceback."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from jobs.cli import main
from tests.fakes.openai_server import FakeOpenAIServer


def _latin1_csv(path: Path) -> Path:
    path.write_bytes("id,text\nx1,Caf\xe9 au lait for breakfast\n".encode("latin-1"))
    return path


def _latin1_yaml(path: Path) -> Path:
    text = (Path(__file__).resolve().parents[1] / "configs" / "experiments" / "hello.yaml").read_text()
    path.write_bytes(text.replace("Topic of a short text", "Th\xe8me of a short text").encode("latin-1"))
    return path


CASES = [
    (
        "non-UTF-8 CSV",
        lambda tmp: ["run", "hello", "--model", "fake", "--input", str(_latin1_csv(tmp / "a.csv"))],
        2,
        ["a.csv", "byte"],
    ),
    (
        "non-UTF-8 YAML",
        lambda tmp: ["run", "hello", "--model", "fake", "--config", str(_latin1_yaml(tmp / "hello.yaml"))],
        2,
        ["hello.yaml", "byte"],
    ),
    ("--limit 0", lambda tmp: ["run", "hello", "--limit", "0"], 2, ["--limit", ">= 1"]),
    ("--batch-size 0", lambda tmp: ["run", "hello", "--batch-size", "0"], 2, ["--batch-size", ">= 1"]),
    ("--calls-per-run 0", lambda tmp: ["run", "hello", "--calls-per-run", "0"], 2, ["--calls-per-run", ">= 1"]),
    ("--max-cost abc", lambda tmp: ["run", "hello", "--max-cost", "abc"], 2, ["--max-cost", "abc"]),
    ("status before any run", lambda tmp: ["status", "hello"], 2, ["no run of hello yet", "assay run hello"]),
    ("resume before any run", lambda tmp: ["resume", "hello"], 2, ["no run of hello yet", "assay run hello"]),
    ("unknown experiment", lambda tmp: ["run", "nosuch"], 2, ["unknown experiment 'nosuch'", "known:"]),
    ("unknown model", lambda tmp: ["run", "hello", "--model", "nosuch"], 2, ["unknown model alias 'nosuch'"]),
]


@pytest.mark.parametrize(("argv", "code", "fragments"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_one_line_with_exit_code_2(
    argv,
    code: int,
    fragments: list[str],
    assay_env: Path,
    fake_server: FakeOpenAIServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(argv(assay_env)) == code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert fake_server.total() == 0, "nothing was sent for bad input"


def test_an_error_that_is_not_ours_is_one_line_and_its_traceback_is_logged(
    assay_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from jobs.launcher import ExperimentLauncher

    def broken(self: ExperimentLauncher) -> int:
        raise RuntimeError("something unforeseen")

    monkeypatch.setattr(ExperimentLauncher, "run", broken)
    assert main(["run", "hello", "--model", "fake"]) == 3
    [line] = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert "RuntimeError: something unforeseen" in line and "traceback in" in line
    log = Path(line.rsplit("traceback in ", 1)[1])
    assert log.exists() and "Traceback" in log.read_text() and "broken" in log.read_text()


@pytest.mark.slow
def test_two_runs_of_one_experiment_at_once_send_each_call_once(assay_env: Path, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from tests.fakes.openai_server import start_fake_server_process

    items = tmp_path / "items.csv"
    with items.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        writer.writerows([f"t{index}", f"Concurrent text {index} about the weather."] for index in range(60))
    server = start_fake_server_process(latency=0.1)
    try:
        env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
        env["ASSAY_FAKE_BASE_URL"] = server.base_url
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
            "models.fake.limits.max_concurrent=4",
        ]
        repo = Path(__file__).resolve().parents[1]
        first = subprocess.Popen(command, cwd=repo, env=env, stderr=subprocess.PIPE, text=True)
        second = subprocess.Popen(command, cwd=repo, env=env, stderr=subprocess.PIPE, text=True)
        results = [
            (process.wait(timeout=300), process.stderr.read() if process.stderr else "") for process in (first, second)
        ]
        codes = sorted(code for code, _ in results)
        assert codes == [0, 2], results
        refused = next(err for code, err in results if code == 2)
        assert "is already being run by process" in refused and "kill -INT" in refused
        stats = server.stats()
        assert stats["total"] == 60 and all(count == 1 for count in stats["by_prompt"].values())
    finally:
        server.stop()
