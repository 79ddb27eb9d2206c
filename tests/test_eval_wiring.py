"""The evaluation loop wired into experiments and the command line: the prompt gate, hard checks, judges,
traces, model comparison, canaries, perspectives.

End-to-end tests go through `jobs.cli.main([...])` to the fake OpenAI server over real HTTP on a temporary
SQLite Dagster instance (the `assay_env` fixture).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from jobs.cli import main
from pipeline.experiments.eval_records import SynthesisSet
from pipeline.experiments.eval_stages import agreement_rows
from pipeline.records import Judgement, JudgementSet
from tests.conftest import HELLO_GOLD, fake_alias_flag, gold_responder
from tests.fakes.openai_server import FakeOpenAIServer

REPO = Path(__file__).resolve().parent.parent

TOY = """\
kind: classify
dataset: {loader: inline, items: [{id: a, text: hi, label: x}], gold_field: label}
prompts:
  user: "USER_TEXT {text}"
output: {labels: [x, y]}
"""


def test_prompt_check_passes_on_the_shipped_experiments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prompt", "check"]) == 0
    assert "every prompt version" in capsys.readouterr().out


def test_prompt_check_fails_with_one_line_per_changed_prompt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    experiments = tmp_path / "experiments"
    experiments.mkdir()
    for name in ("toy", "toy2"):
        (experiments / f"{name}.yaml").write_text(TOY.replace("USER_TEXT", f"Label {name}:"), encoding="utf-8")
    flags = ["--experiments-dir", str(experiments), "--changelog-dir", str(tmp_path / "changelog")]
    assert main(["prompt", "check", *flags]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all("has no changelog" in line for line in lines)


def test_prompt_check_fails_when_the_prompt_changes_after_its_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import datetime as dt

    from pipeline.evaluation.prompt_versions import (
        ChangelogEntry,
        PromptChangelog,
        changelog_path,
        current_prompt_version,
        write_changelog,
    )

    experiments = tmp_path / "experiments"
    experiments.mkdir()
    (experiments / "toy.yaml").write_text(TOY.replace("USER_TEXT", "Label:"), encoding="utf-8")
    version = current_prompt_version("toy", experiments)
    entry = ChangelogEntry(version=version, date=dt.date(2026, 12, 1), author="ana", note="first", gold_run="runs/x")
    write_changelog(changelog_path("toy", tmp_path / "log"), PromptChangelog(experiment="toy", entries=[entry]))
    flags = ["toy", "--experiments-dir", str(experiments), "--changelog-dir", str(tmp_path / "log")]
    assert main(["prompt", "check", *flags]) == 0
    (experiments / "toy.yaml").write_text(TOY.replace("USER_TEXT", "Label this, please:"), encoding="utf-8")
    capsys.readouterr()
    assert main(["prompt", "check", *flags]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "has no entry" in line


# -- hard checks -----------------------------------------------------------------------------------------


def check_result(experiment: str, asset: str, name: str) -> tuple[bool, dict[str, Any]]:
    """The latest evaluation of an asset check on the test's instance: passed, and its metadata."""
    from dagster import AssetCheckKey, AssetKey

    from jobs.instance import get_instance

    key = AssetCheckKey(AssetKey([experiment.replace("-", "_"), asset]), name)
    [record] = get_instance().event_log_storage.get_asset_check_execution_history(key, limit=1)
    assert record.event is not None and record.event.dagster_event is not None
    evaluation = record.event.dagster_event.event_specific_data
    return evaluation.passed, {name: value.value for name, value in evaluation.metadata.items()}


def refusing_responder(request: dict[str, Any]) -> str:
    """hello's gold answers, except a refusal for the kernel text and for every repair request."""
    text = request["messages"][-1]["content"]
    if "kernel" in text or "previous answer was not valid" in text:
        return "I'm sorry, I cannot help with that."
    return gold_responder(request)


def latest_report(tmp_path: Path, experiment: str) -> str:
    folder = sorted((tmp_path / "runs").glob(f"{experiment}-*"))[-1]
    return (folder / "outputs" / "final_report.md").read_text()


@pytest.mark.slow
def test_hard_checks_pass_on_good_answers_and_fail_with_the_failures_listed(
    assay_env: Path, fake_server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["run", "hello", "--model", "fake"]) == 0
    passed, metadata = check_result("hello", "hard_checks", "hard_checks_pass_rate")
    assert passed and metadata["lowest_pass_rate"] == 1.0 and metadata["min_pass_rate"] == 0.95
    assert "## Hard checks" in latest_report(assay_env, "hello")

    with FakeOpenAIServer(responder=refusing_responder) as refusing:
        monkeypatch.setenv("ASSAY_FAKE_BASE_URL", refusing.base_url)  # another api_base: other call ids
        assert main(["run", "hello", "--model", "fake"]) == 0  # every call answered; h3 is invalid after repair
    passed, metadata = check_result("hello", "hard_checks", "hard_checks_pass_rate")
    assert not passed
    assert metadata["lowest_pass_rate"] == 7 / 8 and metadata["min_pass_rate"] == 0.95
    assert "custom:no_refusal" in metadata["checks_below"]
    report = latest_report(assay_env, "hello")
    assert "| h3 | fake | 0 | custom:no_refusal | the answer is a refusal" in report


# -- judges ----------------------------------------------------------------------------------------------


def _judging(request: dict[str, Any]) -> tuple[str, str] | None:
    """(text, answer) of a judge call, None for any other call."""
    response_format = request.get("response_format") or {}
    if (response_format.get("json_schema") or {}).get("name") != "judgement":
        return None
    prompt = request["messages"][-1]["content"]
    text = prompt.split("Input:\n", 1)[1].split("\n\nExpected answer", 1)[0]
    return text, prompt.rsplit("Answer to judge:\n", 1)[1].strip()


def judges_responder() -> Any:
    """Answers: gold except 'sports' for the snow text. Judge `fake` grades by gold; `judge2` says 'correct' to
    everything, except that its three repeats on the eggs text disagree (correct, incorrect, correct)."""
    seen: dict[str, int] = {}

    def respond(request: dict[str, Any]) -> str:
        judging = _judging(request)
        if judging is None:
            content = request["messages"][-1]["content"]
            return json.dumps({"topic": "sports"}) if "snow" in content else gold_responder(request)
        text, answer = judging
        right = next(label for word, label in HELLO_GOLD.items() if word in text) == answer
        if request["model"] == "judge-two":
            right = True
            if "eggs" in text:
                seen[text] = seen.get(text, 0) + 1
                right = seen[text] != 2
        verdict = "correct" if right else "incorrect"
        return json.dumps({"score": 5 if right else 1, "verdict": verdict, "reason": "keyword"})

    return respond


@pytest.mark.slow
def test_two_judges_with_repeats_vote_expose_the_flaky_answer_and_report_agreement(
    assay_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeOpenAIServer(responder=judges_responder()) as server:
        monkeypatch.setenv("ASSAY_FAKE_BASE_URL", server.base_url)
        judge2 = fake_alias_flag("judge2", model="openai/judge-two")
        flags = ["--model", "fake", "--set", judge2, "--set", "judge.models=[fake,judge2]", "--set", "judge.repeats=3"]
        assert main(["run", "hello-judge", *flags]) == 0
        assert server.total() == 8 + 8 * 2 * 3  # answers, then 8 answers x 2 judges x 3 repeats
    record = json.loads((assay_env / "home" / "work" / "hello-judge" / "stages" / "judgements.json").read_text())
    judgements = JudgementSet.from_json(record["data"])
    assert len(judgements.rows) == 48 and all(row.valid for row in judgements.rows)
    [flaky] = judgements.flaky
    assert flaky["item_id"] == "h2" and flaky["judge"] == "judge2" and flaky["counts"] == {"correct": 2, "incorrect": 1}
    votes = {vote["item_id"]: vote for vote in judgements.votes}
    assert votes["h8"]["tie"] and votes["h8"]["verdict"] == "incorrect"  # 3 vs 3: the configured tie verdict
    assert votes["h1"]["verdict"] == "correct" and votes["h1"]["counts"] == {"correct": 6}
    figures = {(row.measure, row.raters): row for row in judgements.agreement}
    assert figures[("accuracy vs gold", "fake")].value == 1.0
    assert figures[("accuracy vs gold", "judge2")].value == 7 / 8  # it passed the wrong answer to h8
    assert figures[("Cohen kappa", "fake vs judge2")].value == pytest.approx(0.0)  # p_o = p_e = 7/8
    assert ("Krippendorff alpha", "fake, judge2") in figures
    assert figures[("Krippendorff alpha", "fake: its 3 repeats")].value == pytest.approx(1.0)
    report = latest_report(assay_env, "hello-judge")
    assert "### Agreement" in report and "| Cohen kappa | fake vs judge2 | 0.000 | 8 |" in report
    assert "| h2 | judge2 | correct: 2, incorrect: 1 | 67% |" in report


def test_judge_agreement_reproduces_a_published_cohen_kappa() -> None:
    # Wikipedia, "Cohen's kappa", worked example: 50 proposals, A and B agree yes 20, no 15; A yes B no 5,
    # A no B yes 10: kappa = 0.4. Each judge's verdict is its majority over two agreeing repeats.
    pairs = [("yes", "yes")] * 20 + [("no", "no")] * 15 + [("yes", "no")] * 5 + [("no", "yes")] * 10
    rows = [
        Judgement(f"i{index}", f"i{index}", "c", "x", judge, repeat, "j", verdict, None, "", True)
        for index, pair in enumerate(pairs)
        for judge, verdict in zip(("A", "B"), pair, strict=True)
        for repeat in range(2)
    ]
    figures = {(row.measure, row.raters): row for row in agreement_rows(rows, ["yes", "no"], {}, {})}
    assert figures[("Cohen kappa", "A vs B")].value == pytest.approx(0.4)
    assert figures[("Cohen kappa", "A vs B")].n == 50


# -- traces ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_trace_prints_a_calls_record_and_attempts_and_the_partition_names_the_command(
    assay_env: Path, fake_server: FakeOpenAIServer, capsys: pytest.CaptureFixture[str]
) -> None:
    from dagster import AssetKey

    from jobs.instance import get_instance

    fake_server.inject("500", times=1, match="striker")  # one failed attempt, then the answer
    assert main(["run", "hello", "--model", "fake"]) == 0
    capsys.readouterr()
    event = get_instance().get_latest_materialization_event(AssetKey(["hello", "llm_responses"]))
    assert event is not None and event.asset_materialization is not None
    metadata = event.asset_materialization.metadata
    key = event.asset_materialization.partition
    assert metadata["trace"].value == f"assay trace {key}"

    striker_key = next(k for k in get_instance().get_dynamic_partitions("hello__llm") if k.startswith("h1."))
    assert main(["trace", striker_key]) == 0
    out = capsys.readouterr().out
    assert "(hello / llm, partition h1.fake.r0." in out
    assert "model: openai/fake-model (alias fake, version 1)" in out and "cost $" in out
    assert "[user] Choose the topic of this text" in out and '{"topic": "sports"}' in out
    assert "attempts (2 in the trace):" in out and "outcome=error" in out and "status_code=500" in out
    call_id = out.split()[1]
    assert main(["trace", call_id[:10], "--experiment", "hello"]) == 0
    assert capsys.readouterr().out.split()[1] == call_id
    assert main(["trace", "nope.fake.r0.00000000"]) == 2
    assert "no call 'nope.fake.r0.00000000'" in capsys.readouterr().err


# -- model comparison ------------------------------------------------------------------------------------


def cheap_misses_the_weather(request: dict[str, Any]) -> str:
    """Gold answers, except that the model `cheap-model` answers 'sports' to the rain text."""
    if request["model"] == "cheap-model" and "rain" in request["messages"][-1]["content"]:
        return json.dumps({"topic": "sports"})
    return gold_responder(request)


@pytest.mark.slow
def test_compare_models_runs_the_gold_set_per_model_and_names_the_cheapest_within_the_margin(
    assay_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cheap = fake_alias_flag("cheap", model="openai/cheap-model", price={"input_per_mtok": 0.1, "output_per_mtok": 0.2})
    with FakeOpenAIServer(responder=cheap_misses_the_weather) as server:
        monkeypatch.setenv("ASSAY_FAKE_BASE_URL", server.base_url)
        flags = ["compare-models", "hello", "--models", "fake,cheap", "--set", cheap]
        assert main([*flags, "--margin", "0.2"]) == 0
        out = capsys.readouterr().out
        assert server.total() == 2 * 8, "the 8 gold items on each model"
        assert "| **cheap** | 87.5% |" in out and "| fake | 100.0% |" in out
        assert "cheapest model within 20.0% of the best (fake): cheap" in out
        assert main([*flags, "--margin", "0"]) == 0
        assert server.total() == 2 * 8, "stored calls are reused"
        assert "cheapest model within 0.0% of the best (fake): fake" in capsys.readouterr().out


# -- canary ----------------------------------------------------------------------------------------------


def test_the_canary_schedule_is_in_the_definitions_and_requests_a_pinned_run() -> None:
    from dagster import RunRequest, build_schedule_context

    from definitions import defs

    schedule = defs.resolve_schedule_def("hello_canary")
    assert schedule.job_name == "hello_job" and schedule.cron_schedule == "0 6 * * *"
    with build_schedule_context(scheduled_execution_time=datetime(2026, 12, 1, 6, 0, tzinfo=UTC)) as context:
        result = schedule.evaluate_tick(context)
    [request] = result.run_requests or []
    assert isinstance(request, RunRequest)
    overrides = request.run_config["resources"]["assay"]["config"]["overrides"]
    assert overrides == ["models=[local]", "params.repeat_offset=202612010600"]


def drifting_responder(state: dict[str, bool]) -> Any:
    """Gold answers; once `state['drift']` is set, 'cooking' for the two weather texts."""

    def respond(request: dict[str, Any]) -> str:
        content = request["messages"][-1]["content"]
        if state["drift"] and ("rain" in content or "snow" in content):
            return json.dumps({"topic": "cooking"})
        return gold_responder(request)

    return respond


@pytest.mark.slow
def test_the_drift_check_stays_quiet_on_a_stable_model_and_fires_on_a_drifting_one(
    assay_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = {"drift": False}
    with FakeOpenAIServer(responder=drifting_responder(state)) as server:
        monkeypatch.setenv("ASSAY_FAKE_BASE_URL", server.base_url)
        assert main(["run", "hello", "--model", "fake"]) == 0  # the first run: the baseline
        passed, metadata = check_result("hello", "canary_drift", "canary_no_drift")
        assert passed and metadata["baseline"] == "(none yet)"

        # What the schedule does: the same prompts asked again as new calls (params.repeat_offset).
        assert main(["run", "hello", "--model", "fake", "--set", "params.repeat_offset=1"]) == 0
        assert server.total() == 16, "the canary asked again instead of reading the archive"
        passed, metadata = check_result("hello", "canary_drift", "canary_no_drift")
        assert passed and metadata["agreement"] == 1.0 and metadata["changed_items"] == []

        state["drift"] = True
        assert main(["run", "hello", "--model", "fake", "--set", "params.repeat_offset=2"]) == 0
    passed, metadata = check_result("hello", "canary_drift", "canary_no_drift")
    assert not passed
    assert metadata["agreement"] == 0.75 and metadata["min_agreement"] == 0.9
    changed = {item["item_id"]: (item["baseline"], item["canary"]) for item in metadata["changed_items"]}
    assert changed == {"h4": ("weather", "cooking"), "h8": ("weather", "cooking")}
    assert any("agreement with the baseline 75.0%" in reason for reason in metadata["reasons"])
    assert "## Canary drift" in latest_report(assay_env, "hello")


# -- perspectives -> synthesis ---------------------------------------------------------------------------


def analyst_responder(request: dict[str, Any]) -> str:
    """Roles answer with their name and the item's first word; the synthesis repeats what the roles said."""
    system = request["messages"][0]["content"]
    user = request["messages"][-1]["content"]
    if system.startswith(("You are a linguist", "You are a skeptic")):
        return f"{system.split()[3].rstrip('.')} on '{user.split()[0]}'"
    if system.startswith("You weigh"):
        views = [line for line in user.splitlines() if " on '" in line]
        return "SYNTHESIS of " + " | ".join(views)
    return gold_responder(request)


@pytest.mark.slow
def test_perspectives_and_synthesis_run_end_to_end_every_call_stored(
    assay_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from definitions import defs

    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {
        "hello_perspectives/perspectives_calls",
        "hello_perspectives/perspectives_responses",
        "hello_perspectives/synthesis_calls",
        "hello_perspectives/synthesis_responses",
        "hello_perspectives/syntheses",
    } <= keys
    with FakeOpenAIServer(responder=analyst_responder) as server:
        monkeypatch.setenv("ASSAY_FAKE_BASE_URL", server.base_url)
        assert main(["run", "hello-perspectives", "--model", "fake"]) == 0
        assert server.total() == 8 + 8 * 2 + 8  # answers, 8 items x 2 roles, one synthesis per item
        server.reset()
        assert main(["run", "hello-perspectives", "--model", "fake"]) == 0
        assert server.total() == 0, "every call of both stages is stored and reused"
    record = json.loads((assay_env / "home" / "work" / "hello-perspectives" / "stages" / "syntheses.json").read_text())
    syntheses = SynthesisSet.from_json(record["data"])
    assert len(syntheses.perspectives) == 16 and all(row.text for row in syntheses.perspectives)
    by_item = {row.item_id: row.text for row in syntheses.syntheses}
    assert by_item["h1"] == "SYNTHESIS of linguist on 'The' | skeptic on 'The'"
    report = latest_report(assay_env, "hello-perspectives")
    assert "## Perspectives and synthesis" in report and "| h1 | fake | 2/2 | SYNTHESIS of" in report


def test_evaluation_records_round_trip_through_their_envelope(tmp_path: Path) -> None:
    from pipeline.evaluation.drift import compare_runs, drift_alarm
    from pipeline.evaluation.drift_config import DriftConfig
    from pipeline.experiments.eval_records import CanaryDrift, HardCheckRow, HardCheckSet, PerspectiveRow
    from pipeline.records import AgreementRow
    from pipeline.stages import load_record, save_record

    result = compare_runs({"a": "x", "b": "y"}, {"a": "x", "b": "z"}, {"a": "x", "b": "y"})
    records: list[Any] = [
        HardCheckSet((HardCheckRow("a", "fake", 0, "c1", "valid_json", False, "not JSON"),), 0.9),
        JudgementSet(
            (Judgement("a", "a", "c1", "x", "fake", 0, "j1", "pass", 4.0, "ok", True),),
            "pass",
            ({"item_id": "a", "verdict": "pass", "counts": {"pass": 1}, "tie": False},),
            (),
            (AgreementRow("Krippendorff alpha", "a, b", None, 0, "undefined"),),
        ),
        CanaryDrift("runs/hello-1", result, drift_alarm(result, DriftConfig())),
        CanaryDrift("(none yet)", None, drift_alarm(result, DriftConfig()).model_copy(update={"alarm": False})),
        SynthesisSet(
            (PerspectiveRow("a", "fake", "skeptic", "c2", "maybe"),),
            (PerspectiveRow("a", "fake", "synthesis", "", None),),
        ),
    ]
    for index, record in enumerate(records):
        path = tmp_path / f"{index}.json"
        digest = save_record(path, record)
        loaded = load_record(path, type(record))
        assert loaded.record == record and loaded.digest == digest
