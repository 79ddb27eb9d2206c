"""The risk-fairness experiment (issue #10) end to end: generated profiles -> calls to the fake OpenAI server over
real HTTP -> answers -> the fairness audit -> the report, through `assay run` on a temporary Dagster instance.

The fake answers by the scoring rule, reading the client back out of the prompt (tests/fakes/risk_responder.py):
unbiased (the right band whatever the name) or biased (every answer about a Black-named client one band riskier).
12 profiles x 8 gender x ethnicity variants = 96 calls per run.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import pipeline.secrets as secrets_module
from jobs.cli import main
from pipeline.config import load_experiment
from pipeline.context import ExperimentContext
from pipeline.experiments import experiment_for
from pipeline.experiments.risk_fairness import FAIRNESS, FairnessStats, RiskFairnessExperiment, variant_of
from pipeline.llm.errors import ConfigError
from pipeline.stages import load_record, save_record
from tests.conftest import fake_alias_flag
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.risk_responder import RiskResponder, make_biased_responder, unbiased_responder

N_PROFILES = 12
CALLS = N_PROFILES * 8
SMALL = [
    f"fairness.profiles.n_profiles={N_PROFILES}",
    "fairness.audit.min_cell_size=10",  # ethnicity groups hold 24 answers, intersections 12
    "fairness.audit.bootstrap_resamples=200",
    "fairness.audit.monte_carlo_resamples=1000",
]
SECRET = "sk-test-SECRET-riskfairness-1234567890"
ISSUE_FILES = {
    "results.jsonl",
    "results.csv",
    "experiment_config.yaml",
    "experiment_metadata.json",
    "experiment.log",
    "experiment_report.json",
    "stats_summary.json",
    "final_report.md",
}
KEY_SHAPE = re.compile(rb"(?<![A-Za-z0-9])sk-[A-Za-z0-9_-]{16,}")  # not the "sk-" of "risk-fairness"


def set_flags(*flags: str) -> list[str]:
    return [part for flag in flags for part in ("--set", flag)]


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def run_folder(tmp_path: Path) -> Path:
    folders = sorted((tmp_path / "runs").glob("risk-fairness-*"))
    assert folders, "no run folder written"
    return folders[-1]


@pytest.fixture
def risk_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[RiskResponder], FakeOpenAIServer]]:
    """Start the fake with a rule-following responder; a fresh Assay home and Dagster instance per test."""
    monkeypatch.setenv("ASSAY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ASSAY_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    servers: list[FakeOpenAIServer] = []

    def start(responder: RiskResponder) -> FakeOpenAIServer:
        server = FakeOpenAIServer(responder=responder).__enter__()
        servers.append(server)
        monkeypatch.setenv("ASSAY_FAKE_BASE_URL", server.base_url)
        return server

    yield start
    for server in servers:
        server.__exit__(None, None, None)


# ---------------------------------------------------------------------------------------------------------------
# Without a server


def test_kind_generates_counterfactual_items_and_adds_the_audit_before_the_report() -> None:
    experiment = experiment_for(load_experiment("risk-fairness", SMALL))
    assert isinstance(experiment, RiskFairnessExperiment)
    items = experiment.load_items().items
    assert len(items) == CALLS and len({item.item_id for item in items}) == CALLS
    first = variant_of(items[0])
    siblings = [variant_of(item) for item in items if variant_of(item).pair_id == first.pair_id]
    assert len(siblings) == 8 and len({(v.groups["gender"], v.groups["ethnicity"]) for v in siblings}) == 8
    assert all(v.profile == first.profile for v in siblings)  # same finances, only the name changes
    assert items[0].gold == str(first.true_band) and "true_band" not in json.dumps(dict(items[0].fields))
    user = experiment.messages_for([items[0]])[-1]["content"]
    assert f"Name: {items[0].fields['name']}" in user and "The firm's scoring rule:" in user

    stages = {stage.name: stage for stage in experiment.stages()}
    assert FAIRNESS in stages["report"].deps and "answers" in stages[FAIRNESS].deps
    assert {"repair", "extractions", "evaluation"} <= set(stages)  # the classify family's stages, reused


def test_answers_are_checked_by_the_schema_and_the_business_rules() -> None:
    experiment = experiment_for(load_experiment("risk-fairness", SMALL))
    item = experiment.load_items().items[0]
    call = experiment.planned_calls([item], ["fake"], ExperimentContext("risk-fairness", SMALL).zoo)[0]
    good = {"risk_band": 3, "allocation": {"equities": 40, "bonds": 45, "cash": 10, "alternatives": 5}}
    answer = experiment.interpret(call, json.dumps({**good, "confidence": 0.7, "rationale": "r"}), "m")[0]
    assert answer.valid and answer.label == "3"
    bad_sum = {**good, "allocation": {**good["allocation"], "cash": 0}, "confidence": 0.7, "rationale": "r"}
    answer = experiment.interpret(call, json.dumps(bad_sum), "m")[0]
    assert not answer.valid and "sum to 90" in answer.reason
    answer = experiment.interpret(call, json.dumps({**good, "risk_band": 7, "confidence": 1, "rationale": ""}), "m")[0]
    assert not answer.valid and answer.label is None


def test_fairness_settings_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"fairness\.profiles: n_profiles: Input should be greater than or equal"):
        load_experiment("risk-fairness", ["fairness.profiles.n_profiles=0"])
    with pytest.raises(ConfigError, match=r"fairness\.audit: correction: Input should be 'holm' or 'fdr_bh'"):
        load_experiment("risk-fairness", ["fairness.audit.correction=bonferroni"])
    with pytest.raises(ConfigError, match="fairness.audit.attributes names \\['religion'\\]"):
        experiment_for(load_experiment("risk-fairness", ["fairness.audit.attributes=[gender, religion]"]))
    with pytest.raises(ConfigError, match="generates its client profiles"):
        experiment_for(load_experiment("risk-fairness", ["dataset.loader=csv", "dataset.path=x.csv"]))


# ---------------------------------------------------------------------------------------------------------------
# End to end


def check_issue_files(folder: Path) -> None:
    outputs = folder / "outputs"
    assert {path.name for path in outputs.iterdir()} >= ISSUE_FILES
    for line in (outputs / "experiment.log").read_text().splitlines():
        event = json.loads(line)
        assert {"ts", "level", "event"} <= set(event)
    metadata = read_json(outputs / "experiment_metadata.json")
    assert metadata["package_versions"]["scipy"] and metadata["system"]["python"]
    assert "git_commit" in metadata and metadata["profiles"]["n_profiles"] == N_PROFILES
    report = read_json(outputs / "experiment_report.json")
    assert report["status"] == "complete" and report["counts"]["answers_valid"] == CALLS
    markdown = (outputs / "final_report.md").read_text()
    assert markdown.index("### Verdicts") < markdown.index("| model | items |")  # verdicts first
    assert "## Scoring rule" in markdown and "caps the band at 2" in markdown
    assert (outputs / "fairness_signed_error.png").exists() and (outputs / "fairness_flip_rate.png").exists()


def verdicts(folder: Path) -> dict[str, dict[str, Any]]:
    stats = read_json(folder / "outputs" / "stats_summary.json")
    return {v["attribute"]: v for v in stats["fairness"]["verdicts"]}


@pytest.mark.slow
def test_unbiased_fake_no_difference_after_correction_and_no_secret_in_any_file(
    risk_env: Callable[[RiskResponder], FakeOpenAIServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = risk_env(unbiased_responder)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)  # the keyed alias sends it to the fake, and nowhere else
    # A key-shaped string planted in the description reaches experiment_config.yaml and final_report.md.
    description = f"Unbiased fake (token {SECRET})"
    keyed = fake_alias_flag("keyed", needs_key=True)
    flags = ["run", "risk-fairness", "--model", "keyed", *set_flags(*SMALL, keyed, f"description={description}")]
    assert main(flags) == 0
    assert server.total() == CALLS
    out = capsys.readouterr().out
    assert re.search(r"assay: llm: estimated \$\d+\.\d{4} for 96 calls \(priced: openai/fake-model\)", out), out

    folder = run_folder(tmp_path)
    check_issue_files(folder)
    found = verdicts(folder)
    assert set(found) == {"gender", "ethnicity", "gender×ethnicity"}
    for verdict in found.values():
        assert not verdict["significant"] and "no evidence of a difference after correction" in verdict["sentence"]
    stats = read_json(folder / "outputs" / "stats_summary.json")
    assert stats["models"]["keyed"]["accuracy"]["estimate"] == 1.0
    assert all(c["flip_rate"] == 0 for c in stats["fairness"]["paired"])

    scanned = 0
    for path in folder.rglob("*"):
        if path.is_file():
            scanned += 1
            data = path.read_bytes()
            assert b"SECRET" not in data and not KEY_SHAPE.search(data), f"secret-looking string in {path}"
    assert scanned >= 20


@pytest.mark.slow
def test_the_secret_check_above_finds_the_planted_key_when_scrubbing_is_off(
    risk_env: Callable[[RiskResponder], FakeOpenAIServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    risk_env(unbiased_responder)
    monkeypatch.setattr(secrets_module, "_enabled", False)
    flags = ["run", "risk-fairness", "--model", "fake", *set_flags(*SMALL, f"description=token {SECRET}")]
    assert main(flags) == 0
    outputs = run_folder(tmp_path) / "outputs"
    assert SECRET in (outputs / "experiment_config.yaml").read_text(), "the planted key never reached the files"


@pytest.mark.slow
def test_biased_fake_flags_the_group_after_correction_and_the_flip_rate_shows_it(
    risk_env: Callable[[RiskResponder], FakeOpenAIServer], tmp_path: Path
) -> None:
    server = risk_env(make_biased_responder("ethnicity=black", shift=1))
    assert main(["run", "risk-fairness", "--model", "fake", *set_flags(*SMALL)]) == 0
    assert server.total() == CALLS
    folder = run_folder(tmp_path)
    check_issue_files(folder)

    found = verdicts(folder)
    assert found["ethnicity"]["significant"] and "black was placed" in found["ethnicity"]["sentence"]
    assert not found["gender"]["significant"]
    fairness = read_json(folder / "outputs" / "stats_summary.json")["fairness"]
    black_tests = [t for t in fairness["tests"] if t["attribute"] == "ethnicity" and "black" in t["groups"]]
    paired = [t for t in black_tests if t["test"] == "wilcoxon_signed_rank"]
    assert len(paired) == 3 and all(t["p_holm"] < 0.05 for t in paired)
    others = [t for t in fairness["tests"] if t["attribute"] == "ethnicity" and "black" not in t["groups"]]
    assert others and all(not t["reject_holm"] for t in others)
    flips = {(c["group_a"], c["group_b"]): c for c in fairness["paired"] if c["attribute"] == "ethnicity"}
    for (a, b), comparison in flips.items():
        if "black" in (a, b):
            # Every pair moves except band-6 profiles (already the top band): 2 of the 12 profiles.
            assert comparison["flip_rate"] == pytest.approx(10 / 12)
            higher = comparison["a_higher"] if a == "black" else comparison["b_higher"]
            assert higher == comparison["n_flips"] > 0
        else:
            assert comparison["flip_rate"] == 0

    with (folder / "outputs" / "results.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == CALLS
    black = [row for row in rows if row["ethnicity"] == "black"]
    assert {row["direction"] for row in black} == {"over", "exact"}  # exact: band 6 cannot go higher
    assert all(row["direction"] == "exact" for row in rows if row["ethnicity"] != "black")
    assert all(int(row["signed_error"]) == int(row["predicted_band"]) - int(row["true_band"]) for row in rows)
    report = (folder / "outputs" / "final_report.md").read_text()
    assert "**ethnicity: black was placed" in report


@pytest.mark.slow
def test_max_cost_refuses_to_start_when_the_estimate_exceeds_it(
    risk_env: Callable[[RiskResponder], FakeOpenAIServer], capsys: pytest.CaptureFixture[str]
) -> None:
    server = risk_env(unbiased_responder)
    assert main(["run", "risk-fairness", "--model", "fake", "--max-cost", "0.001", *set_flags(*SMALL)]) == 2
    captured = capsys.readouterr()
    assert "exceeds the budget" in captured.err
    assert re.search(r"estimated \$\d+\.\d{4} for 96 calls", captured.out), "the estimate is printed first"
    assert server.total() == 0


@pytest.mark.slow
def test_max_cost_stops_mid_run_and_the_audit_leaves_missing_answers_out(
    risk_env: Callable[[RiskResponder], FakeOpenAIServer], tmp_path: Path
) -> None:
    server = risk_env(unbiased_responder)
    # Each call is estimated at ~$0.0011 (~650 prompt tokens + 200 max output at $1/$2 per 1M).
    flags = [
        "run",
        "risk-fairness",
        "--model",
        "fake",
        "--max-cost",
        "0.02",
        *set_flags(*SMALL, "budget.block_on_estimate=false", "models.fake.limits.max_concurrent=1"),
    ]
    assert main(flags) == 1
    sent = server.total()
    assert 0 < sent < CALLS
    folder = run_folder(tmp_path)
    assert read_json(folder / "outputs" / "experiment_report.json")["status"] == "partial"
    record = load_record(ExperimentContext("risk-fairness", SMALL).record_path(FAIRNESS), FairnessStats).record
    (model,) = record.models
    assert len(model.rows) == sent and model.missing == CALLS - sent
    assert model.audit is not None and model.audit.n_rows == sent


def test_fairness_stats_record_round_trips(tmp_path: Path) -> None:
    from pipeline.data.risk_prompt import fairness_row
    from pipeline.experiments.risk_fairness import ModelAudit
    from pipeline.stats.fairness import FairnessConfig, audit

    experiment = experiment_for(load_experiment("risk-fairness", SMALL))
    assert isinstance(experiment, RiskFairnessExperiment)
    rows = [
        fairness_row(v, {"risk_band": min(6, v.true_band + (v.groups["gender"] == "female")), "confidence": 0.9})
        for v in experiment.variants()
    ]
    config = FairnessConfig(min_cell_size=10, bootstrap_resamples=50, monte_carlo_resamples=100)
    record = FairnessStats((ModelAudit("fake", tuple(rows), 3, audit(rows, config)), ModelAudit("x", (), 0, None)))
    path = tmp_path / "fairness_stats.json"
    digest = save_record(path, record)
    loaded = load_record(path, FairnessStats)
    assert loaded.digest == digest and loaded.record.to_json() == record.to_json()
    assert loaded.record.models[0].rows == record.models[0].rows
