"""The stage graph: declarations, segments, plans, records, and what runs through Dagster from them.

End-to-end tests go through `assay run` to the fake OpenAI server over real HTTP on a temporary SQLite
Dagster instance; `materialize()` tests use the offline ReplayClient chosen by the AssayResource.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from jobs.cli import main
from pipeline.context import ExperimentContext
from pipeline.llm.errors import ConfigError
from pipeline.records import AnswerRecord, AnswerSet, Evaluation, JudgementSet, ModelMetrics, ReportRecord, SourceRecord
from pipeline.stages import CallStage, DataStage, StageGraph, load_record, partition_key, save_record
from tests.conftest import fake_alias_flag
from tests.fakes.openai_server import FakeOpenAIServer

REPO = Path(__file__).resolve().parent.parent


def _noop(inputs: Any) -> Any:
    return None


def test_graph_orders_stages_and_cuts_segments_before_each_call_stage() -> None:
    stages = (
        DataStage("report", ("answers", "judge"), _noop, ReportRecord, "r", role="report"),
        DataStage("source", (), _noop, SourceRecord, "s", role="source"),
        CallStage("llm", ("source",), _noop, "c"),
        DataStage("answers", ("llm",), _noop, AnswerSet, "a"),
        CallStage("judge", ("answers",), _noop, "j"),
    )
    graph = StageGraph(stages)
    assert [stage.name for stage in graph.ordered()] == ["source", "llm", "answers", "judge", "report"]
    segments = [(segment.name, segment.assets) for segment in graph.segments()]
    assert segments == [
        ("llm", ("source", "llm_calls")),
        ("judge", ("answers", "judge_calls")),
        ("analysis", ("report",)),
    ]


def test_graph_errors_name_the_stage() -> None:
    with pytest.raises(ConfigError, match="'answers' depends on unknown stage 'nope'"):
        StageGraph((DataStage("answers", ("nope",), _noop, AnswerSet, "a"),))
    with pytest.raises(ConfigError, match="cycle"):
        StageGraph((DataStage("a", ("b",), _noop, AnswerSet, "a"), DataStage("b", ("a",), _noop, AnswerSet, "b")))


def test_partition_keys_name_item_alias_and_repeat() -> None:
    key = partition_key(["prod 7/a"], "gpt4o_mini", 2, "0123456789abcdef")
    assert key == "prod_7_a.gpt4o_mini.r2.01234567"
    assert partition_key(["a", "b", "c"], "fake", 0, "ff" * 16).startswith("a+2.fake.r0.")
    assert "..." not in partition_key(["x..."], "fake", 0, "ab" * 16)  # Dagster refuses '...' in keys


def test_records_round_trip_through_their_envelope(tmp_path: Path) -> None:
    row = AnswerRecord("i1", "c1", "gpt4o", 0, "a", {"label": "a"}, "ok", "", "{}", "m", requested_alias="mini")
    records: list[Any] = [
        SourceRecord("/x/items.parquet", "ab" * 32, 3, 1, "inline"),
        AnswerSet((row, row.with_changes(item_id="i2", status="missing", label=None)), repair_calls=1),
        Evaluation("hello", "v1", {"fake": ModelMetrics(2, 1, 0, 1, 0.5, 10, 5, {"estimate": 0.5}, 2, extra={"x": 1})}),
        JudgementSet(()),
        ReportRecord("/runs/a", "/runs/a/outputs/final_report.md", "complete"),
    ]
    for record in records:
        path = tmp_path / f"{record.record_type}.json"
        digest = save_record(path, record)
        loaded = load_record(path, type(record))
        assert loaded.record == record and loaded.digest == digest
    envelope = json.loads((tmp_path / "answers.json").read_text())
    envelope["format_version"] = 99
    (tmp_path / "answers.json").write_text(json.dumps(envelope))
    with pytest.raises(ValueError, match="answers format 99, this Assay reads 1"):
        load_record(tmp_path / "answers.json", AnswerSet)


def test_hello_call_ids_are_those_stored_before_the_stage_graph(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Computed by the pre-stage-graph code (commit ee81cd4, ExperimentSession.plan) for hello on `fake` at the
    # default ASSAY_FAKE_BASE_URL: responses stored before this change are found, never paid for again.
    monkeypatch.delenv("ASSAY_FAKE_BASE_URL", raising=False)
    context = ExperimentContext("hello", ["models=[fake]"], home=tmp_path)
    plan = context.kind.plan(context.kind.load_items().items, context.aliases(), context.zoo)
    assert plan.call_ids[:3] == [
        "b754dd080ab2564466dcad24d0ce4d74",
        "452957e9d09cf21f4f3b315105762a43",
        "c8b6097d75a1b510e0ab58b7694cd8a3",
    ]


def _items_csv(path: Path, texts: list[str]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text", "topic"])
        for index, text in enumerate(texts):
            writer.writerow([f"d{index}", text, "sports"])
    return path


def _results(tmp_path: Path, experiment: str = "hello") -> list[dict[str, Any]]:
    folder = sorted((tmp_path / "runs").glob(f"{experiment}-*"))[-1]
    return [json.loads(line) for line in (folder / "outputs" / "results.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_items_with_identical_prompts_share_one_call_and_each_keeps_its_row(
    assay_env: Path, fake_server: FakeOpenAIServer
) -> None:
    same = "The striker scored twice in the second half."
    items = _items_csv(assay_env / "items.csv", [same, same, "Whisk the eggs with sugar until pale."])
    assert main(["run", "hello", "--model", "fake", "--input", str(items)]) == 0
    assert fake_server.total() == 2, "one call for the two identical prompts"
    rows = _results(assay_env)
    assert sorted(row["item_id"] for row in rows) == ["d0", "d1", "d2"]
    assert {row["label"] for row in rows if row["item_id"] in ("d0", "d1")} == {"sports"}


@pytest.mark.slow
def test_a_fallback_answer_is_the_fallback_models_call_and_the_primary_is_asked_again_later(
    assay_env: Path, fake_server: FakeOpenAIServer, capsys: pytest.CaptureFixture[str]
) -> None:
    primary = fake_alias_flag("prim", model="openai/primary-model", fallbacks=["fake"], max_attempts=1)
    flags = ["--model", "prim", "--set", primary]
    fake_server.inject("500", times=100, match="striker")  # only the primary's call fails over; both see 'striker'
    # The fallback is asked with the same messages: let it answer the second time that prompt arrives.
    code = main(["run", "hello", *flags])
    capsys.readouterr()
    assert code == 1 or code == 0
    rows = _results(assay_env)
    striker = [row for row in rows if row["item_id"] == "h1"]
    assert striker and all(row["status"] == "missing" for row in striker)  # 500 for every model: no answer

    fake_server.reset()
    fake_server.inject("500", times=1, match="striker")  # the primary fails once more, the fallback answers
    assert main(["resume", "hello"]) == 0
    rows = _results(assay_env)
    [row] = [row for row in rows if row["item_id"] == "h1"]
    assert row["alias"] == "fake" and row["requested_alias"] == "prim"
    assert row["answered_call_id"] != row["call_id"], "stored as the fallback model's own call"
    context = ExperimentContext("hello", [primary, "models=[prim]"])
    assert context.store.get(row["call_id"]) is None, "nothing stored under the primary's call id"
    evaluation = json.loads(
        (sorted((assay_env / "runs").glob("hello-*"))[-1] / "outputs" / "stats_summary.json").read_text()
    )
    assert evaluation["models"]["fake"]["items"] == 1 and evaluation["models"]["prim"]["items"] == 7

    fake_server.reset()
    assert main(["run", "hello", *flags]) == 0
    assert fake_server.total() == 1, "a later run asks the primary again for that call only"
    [row] = [row for row in _results(assay_env) if row["item_id"] == "h1"]
    assert row["alias"] == "prim"


@pytest.mark.slow
def test_hello_judge_grades_answers_in_a_second_call_stage(assay_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The schema-following fake (no responder): it answers the judges' verdict schema as well as the topics.
    fake_server = FakeOpenAIServer().__enter__()
    monkeypatch.setenv("ASSAY_FAKE_BASE_URL", fake_server.base_url)
    try:
        _hello_judge_run_and_rerun(assay_env, fake_server)
    finally:
        fake_server.stop()


def _hello_judge_run_and_rerun(assay_env: Path, fake_server: FakeOpenAIServer) -> None:
    assert main(["run", "hello-judge", "--model", "fake", "--set", "judge.models=[fake]"]) == 0
    assert fake_server.total() == 16  # 8 answers + 8 verdicts
    folder = sorted((assay_env / "runs").glob("hello-judge-*"))[-1]
    report = (folder / "outputs" / "final_report.md").read_text()
    # The judges' table itself (not another table that happens to name `fake`): 8 answers judged, none invalid.
    assert re.search(r"## Judges\n\n\| judge \| judged \|[^\n]*\n[^\n]*\n\| fake \| 8 \| \d+ \| 0 \|", report), report
    fake_server.reset()
    assert main(["run", "hello-judge", "--model", "fake", "--set", "judge.models=[fake]"]) == 0
    assert fake_server.total() == 0, "both stages' stored calls are reused"


@pytest.mark.slow
def test_scattered_failures_are_moved_together_so_a_backfill_needs_ceil_n_over_k_runs(
    assay_env: Path, fake_server: FakeOpenAIServer, capsys: pytest.CaptureFixture[str]
) -> None:
    from dagster._core.definitions.automation_tick_evaluation_context import (
        build_run_requests_with_backfill_policies,
    )
    from dagster._core.definitions.events import AssetKeyPartitionKey

    from definitions import defs
    from jobs.instance import get_instance
    from jobs.launcher import ExperimentLauncher

    texts = [f"Item {index} about the weather {'and the striker' if index % 3 == 0 else ''}." for index in range(30)]
    items = _items_csv(assay_env / "items.csv", texts)
    fake_server.inject("500", times=1000, match="striker")  # 10 scattered calls fail
    flags = ["--model", "fake", "--input", str(items), "--set", "models.fake.max_attempts=1", "--calls-per-run", "4"]
    assert main(["run", "hello", *flags]) == 1
    capsys.readouterr()
    instance = get_instance()
    launcher = ExperimentLauncher("hello", ["models=[fake]", "run.batch_size=4"], instance)
    failed = launcher.failed_partitions("llm")
    assert len(failed) == 10
    ordered = list(instance.get_dynamic_partitions("hello__llm"))
    assert set(ordered[-10:]) == failed, "the failed calls are together at the end of the partition order"
    # What the backfill daemon does with a UI backfill of these partitions (the same function, the real graph):
    from dagster._core.definitions.partitions.context import partition_loading_context

    key = launcher._responses_key("llm")
    with partition_loading_context(dynamic_partitions_store=instance):
        requests = build_run_requests_with_backfill_policies(
            [AssetKeyPartitionKey(key, partition) for partition in failed], defs.resolve_asset_graph(), instance
        )
    # The UI's backfill uses the asset's policy: hello's file says 5000 calls per run. Scattered, the 10 calls
    # would have been up to 10 separate ranges (runs); together they are ceil(10 / 5000) = 1.
    assert len(requests) == math.ceil(10 / 5000)


def test_every_asset_kind_materializes_with_the_replay_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dagster import DagsterInstance, materialize

    from assets.experiment import build_experiment_definitions
    from resources.assay import AssayResource, NullIOManager

    monkeypatch.setenv("ASSAY_RUNS_DIR", str(tmp_path / "runs"))
    definitions = build_experiment_definitions("hello-judge")
    resources = {
        "assay": AssayResource(overrides=["models=[fake]", "judge.models=[fake]"], home=str(tmp_path), calls="replay"),
        "assay_null_io": NullIOManager(),
    }
    everything = [*definitions.assets, *definitions.checks]
    kinds: set[str] = set()
    with DagsterInstance.ephemeral() as instance:
        # Segment by segment, as `assay run` does: each segment's assets, then its call stage's responses
        # (without a partition key a responses asset covers its whole plan).
        for segment in definitions.graph.segments():
            selections = [list(segment.assets)]
            if segment.call_stage is not None:
                selections.append([segment.call_stage.responses_asset])
            for names in selections:
                if not names:
                    continue
                selection = [definitions.config.asset_prefix + "/" + name for name in names]
                result = materialize(
                    everything, selection=selection, resources=resources, instance=instance, raise_on_error=True
                )
                assert result.success
                kinds |= {event.asset_key.path[-1] for event in result.get_asset_materialization_events()}
        assert {"source_snapshot", "llm_calls", "llm_responses", "extractions", "judge_responses", "report"} <= kinds
    report = next((tmp_path / "runs").glob("hello-judge-*/outputs/final_report.md")).read_text()
    assert "## Judges" in report


@pytest.mark.slow
def test_config_file_outside_the_experiments_folder_runs_and_a_shipped_name_does_not_hide_it(
    tmp_path: Path, fake_server: FakeOpenAIServer
) -> None:
    text = (REPO / "configs" / "experiments" / "hello.yaml").read_text()
    mine = tmp_path / "elsewhere" / "hello.yaml"  # same name as the shipped one: the file must win
    mine.parent.mkdir()
    mine.write_text(text.replace("Topic of a short text", "MY OWN COPY - topic of a short text"))
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env.update(
        ASSAY_HOME=str(tmp_path / "home"),
        ASSAY_RUNS_DIR=str(tmp_path / "runs"),
        ASSAY_FAKE_BASE_URL=fake_server.base_url,
        LITELLM_LOCAL_MODEL_COST_MAP="True",
    )
    command = [sys.executable, "-m", "jobs.cli", "run", "hello", "--model", "fake", "--config", str(mine)]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = next((tmp_path / "runs").glob("hello-*/outputs/final_report.md")).read_text()
    assert "MY OWN COPY" in report


def test_overrides_may_not_change_the_stage_graph(tmp_path: Path) -> None:
    context = ExperimentContext("hello", ["output.repair=false"], home=tmp_path)
    with pytest.raises(ConfigError, match="stages come from the experiment file"):
        _ = context.graph


@pytest.mark.slow
def test_the_run_failure_sensor_keeps_failed_calls_together_after_runs_it_did_not_start(
    assay_env: Path, fake_server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dagster import DagsterEventType, DagsterRunStatus, RunsFilter, build_run_status_sensor_context

    from definitions import defs
    from jobs.instance import get_instance
    from jobs.launcher import ExperimentLauncher

    # A run the command does not tidy up after (as a UI or backfill run): the sensor must do it.
    monkeypatch.setattr(ExperimentLauncher, "compact_partitions", lambda self, stage: 0)
    texts = [f"Item {index} about the weather {'and the striker' if index % 4 == 1 else ''}." for index in range(12)]
    items = _items_csv(assay_env / "items.csv", texts)
    fake_server.inject("500", times=1000, match="striker")
    assert main(["run", "hello", "--model", "fake", "--input", str(items), "--set", "models.fake.max_attempts=1"]) == 1
    capsys.readouterr()
    instance = get_instance()
    failed = ExperimentLauncher("hello", ["models=[fake]"], instance).failed_partitions("llm")
    ordered = list(instance.get_dynamic_partitions("hello__llm"))
    assert len(failed) == 3 and set(ordered[-3:]) != failed  # scattered

    [run] = instance.get_runs(RunsFilter(job_name="hello_llm_calls_job", statuses=[DagsterRunStatus.FAILURE]))
    [event] = [
        record.get_dagster_event()
        for record in instance.all_logs(run.run_id)
        if record.is_dagster_event and record.get_dagster_event().event_type == DagsterEventType.RUN_FAILURE
    ]
    sensor = defs.get_sensor_def("hello_keep_failed_calls_together")
    context = build_run_status_sensor_context(
        sensor_name=sensor.name, dagster_event=event, dagster_instance=instance, dagster_run=run
    )
    sensor(context)  # type: ignore[operator]
    ordered = list(instance.get_dynamic_partitions("hello__llm"))
    assert set(ordered[-3:]) == failed, "the sensor moved the failed calls together to the end"
