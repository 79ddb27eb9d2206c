"""The Dagster pipeline end to end: `assay run / resume / status` and `dagster job execute` on the hello
experiment, over real HTTP to the fake OpenAI server, on a real (temporary) SQLite Dagster instance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.cli import main
from tests.fakes.openai_server import FakeOpenAIServer


def run_folder(tmp_path: Path) -> Path:
    folders = sorted((tmp_path / "runs").glob("hello-*"))
    assert folders, "no run folder written"
    return folders[-1]


def failed_partitions(experiment: str = "hello") -> set[str]:
    from jobs.launcher import ExperimentLauncher

    return ExperimentLauncher(experiment, ["models=[fake]"]).failed_partitions("llm")


def test_definitions_load_every_experiment() -> None:
    from definitions import defs

    for job in (
        "hello_job",
        "hello_llm_plan_job",
        "hello_llm_calls_job",
        "hello_repair_plan_job",
        "hello_analysis_job",
    ):
        assert defs.resolve_job_def(job) is not None
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {
        "hello/source_snapshot",
        "hello/llm_calls",
        "hello/llm_responses",
        "hello/extractions",
        "hello/repair_calls",
        "hello/repair_responses",
        "hello/answers",
        "hello/evaluation",
        "hello/report",
        "hello_judge/judge_calls",
        "hello_judge/judge_responses",
        "hello_judge/judgements",
    } <= keys


@pytest.mark.slow
def test_run_writes_report_and_second_run_sends_nothing(assay_env: Path, fake_server: FakeOpenAIServer) -> None:
    assert main(["run", "hello", "--model", "fake"]) == 0
    assert fake_server.total() == 8
    summary = json.loads((run_folder(assay_env) / "metadata" / "run_summary.json").read_text())
    assert summary["status"] == "complete"
    assert summary["counts"]["answers_valid"] == 8
    stats = json.loads((run_folder(assay_env) / "outputs" / "stats_summary.json").read_text())
    assert stats["models"]["fake"]["accuracy"]["estimate"] == 1.0

    assert main(["run", "hello", "--model", "fake"]) == 0
    assert fake_server.total() == 8, "a stored call was sent again"


@pytest.mark.slow
def test_failed_call_leaves_its_partition_failed_and_resume_sends_only_it(
    assay_env: Path, fake_server: FakeOpenAIServer, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_server.inject("500", times=100, match="striker")
    code = main(["run", "hello", "--model", "fake", "--set", "models.fake.max_attempts=1"])
    assert code == 1
    assert "assay resume hello" in capsys.readouterr().err
    failed = failed_partitions()
    assert len(failed) == 1
    summary = json.loads((run_folder(assay_env) / "metadata" / "run_summary.json").read_text())
    assert summary["status"] == "partial"
    assert summary["counts"]["answers_missing"] == 1

    fake_server.reset()
    assert main(["resume", "hello"]) == 0
    assert fake_server.total() == 1, "resume must send only the failed call"
    assert failed_partitions() == set()
    summary = json.loads((run_folder(assay_env) / "metadata" / "run_summary.json").read_text())
    assert summary["status"] == "complete"


@pytest.mark.slow
def test_budget_stops_before_crossing_call_and_resume_with_more_budget(
    assay_env: Path, fake_server: FakeOpenAIServer
) -> None:
    # Each fake call is estimated at ~$0.0001 (prompt ~70 tokens + 20 max output, at $1/$2 per 1M).
    code = main(
        [
            "run",
            "hello",
            "--model",
            "fake",
            "--max-cost",
            "0.0003",
            "--set",
            "budget.block_on_estimate=false",
            "--set",
            "models.fake.limits.max_concurrent=1",
        ]
    )
    assert code == 1
    sent = fake_server.total()
    assert 0 < sent < 8
    from pipeline.call_stages import stage_status
    from pipeline.context import ExperimentContext

    status = stage_status(ExperimentContext("hello", ["models=[fake]"]), "llm")
    assert status.done == sent, "every finished response is kept"
    assert status.spent_usd <= 0.0003

    assert main(["resume", "hello", "--max-cost", "1"]) == 0
    assert fake_server.total() == 8


def test_estimate_over_budget_blocks_the_run_before_any_call(
    assay_env: Path, fake_server: FakeOpenAIServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "hello", "--model", "fake", "--max-cost", "0.00001"]) == 2
    assert "exceeds the budget" in capsys.readouterr().err
    assert fake_server.total() == 0


def test_bad_input_gives_one_line_errors(assay_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "hello", "--model", "nosuchmodel"]) == 2
    err = capsys.readouterr().err
    assert "unknown model alias 'nosuchmodel'" in err and "gpt4o_mini" in err and "Traceback" not in err
    assert main(["run", "nosuchexperiment"]) == 2
    assert "unknown experiment 'nosuchexperiment'" in capsys.readouterr().err
    assert main(["run", "hello", "--max-cost", "-1"]) == 2
    assert "budget.max_cost_usd" in capsys.readouterr().err


@pytest.mark.slow
def test_status_reports_done_failed_missing(
    assay_env: Path, fake_server: FakeOpenAIServer, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_server.inject("400", times=100, match="snow")
    main(["run", "hello", "--model", "fake"])
    capsys.readouterr()
    assert main(["status", "hello"]) == 0
    out = capsys.readouterr().out
    assert "done:    7" in out and "failed:  1" in out


@pytest.mark.slow
def test_dagster_job_execute_runs_the_whole_graph(tmp_path: Path, fake_server: FakeOpenAIServer) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    run_config = tmp_path / "run_config.yaml"
    run_config.write_text('resources:\n  assay:\n    config:\n      overrides: ["models=[fake]"]\n')
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "ASSAY_HOME": str(tmp_path / "home"),
        "ASSAY_RUNS_DIR": str(tmp_path / "runs"),
        "ASSAY_FAKE_BASE_URL": fake_server.base_url,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    dagster = Path(sys.executable).with_name("dagster")
    completed = subprocess.run(
        [str(dagster), "job", "execute", "-m", "definitions", "-j", "hello_job", "-c", str(run_config)],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert fake_server.total() == 8
    assert list((tmp_path / "runs").glob("hello-*/outputs/final_report.md"))


@pytest.mark.parametrize("flags", [["--set", "params.repeats=3"], []], ids=["3 repeats", "defaults"])
def test_the_cheap_call_estimate_matches_the_real_plan(assay_env: Path, flags: list[str]) -> None:
    # It decides whether `assay run` starts a call worker before planning; it must count what planning does.
    from jobs.cli import build_parser, overrides_from_args
    from pipeline.call_stages import expected_calls, plan_call_stage
    from pipeline.context import ExperimentContext
    from pipeline.stages import CallStage, DataStage, StageInputs, run_data_stage

    overrides = overrides_from_args(build_parser().parse_args(["run", "hello", "--model", "fake", *flags]))
    context = ExperimentContext("hello", overrides, home=assay_env)
    expected = expected_calls(context)
    assert expected_calls(context, resuming=True) == 0  # nothing planned yet
    source, llm = context.graph.get("source_snapshot"), context.graph.get("llm")
    assert isinstance(source, DataStage) and isinstance(llm, CallStage)
    run_data_stage(context, source)
    planned = len(plan_call_stage(context, llm, StageInputs(context, context.graph)).plan.calls)
    assert expected == planned > 0
    assert expected_calls(context, resuming=True) == planned  # planned, none stored
