"""Review queue: disagreement mining, CSV/JSONL writing, and feedback joining the gold set with provenance."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from pipeline.data.labelled import LabelledItem
from pipeline.ensemble.arbiter import Decision, PassResult
from pipeline.ensemble.review import (
    disagreement_scores,
    merge_feedback,
    mine_review_queue,
    read_feedback,
    write_review_queue,
)
from pipeline.ensemble.voter import VoterOutput
from pipeline.llm.errors import ConfigError

LABELS = ("ham", "spam")


def _out(name: str, p_spam: list[float | None]) -> VoterOutput:
    proba = np.array([[0.5, 0.5] if p is None else [1 - p, p] for p in p_spam])
    return VoterOutput(name, LABELS, proba, np.array([p is None for p in p_spam]), tuple("x" for _ in p_spam))


def test_disagreement_is_zero_for_agreement_and_one_for_a_confident_split() -> None:
    scores = disagreement_scores([_out("a", [0.9, 1.0, 0.9]), _out("b", [0.9, 0.0, None])])
    assert scores[0] == pytest.approx(0.0, abs=1e-9)
    assert scores[1] == pytest.approx(1.0, abs=1e-6)
    assert scores[2] == 0.0  # only one voter voted


def _queue() -> tuple:
    outputs = [_out("a", [0.9, 0.95, 0.1]), _out("b", [0.2, 0.96, 0.1])]
    decisions = PassResult(
        LABELS,
        (
            Decision("m1", True, "spam", "conformal", "set {spam}", "spam", 0.8, ("spam",)),
            Decision("m2", True, "spam", "consensus", "agree", "spam", 0.95),
            Decision("m3", False, None, "abstain", "set {}", "ham", 0.6),
        ),
        "final",
    )
    return mine_review_queue(
        ["m1", "m2", "m3"],
        ["t1", 't2, with "quotes"\nand a newline', "t3"],
        outputs,
        decisions,
        {"spam": 3.0, "ham": 1.0},
    )


def test_queue_holds_abstentions_and_disagreements_by_harm_weighted_priority() -> None:
    queue = _queue()
    # spam's harm weight 3 puts the split m1 above the abstention m3; m2's voters nearly agree: not queued.
    assert [r.item_id for r in queue] == ["m1", "m3"]
    assert [r.priority for r in queue] == sorted((r.priority for r in queue), reverse=True)
    assert {r.item_id for r in queue if r.why.startswith("abstained")} == {"m3"}
    assert "a=spam(0.90) b=ham(0.80)" in next(r.votes for r in queue if r.item_id == "m1")


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_review_round_trip_joins_gold_with_provenance(tmp_path: Path, suffix: str) -> None:
    files = write_review_queue(_queue(), tmp_path)
    assert files.rows == 2
    path = files.csv if suffix == "csv" else files.jsonl
    # The reviewer fills in two of the rows.
    if suffix == "csv":
        with path.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
        rows[0]["reviewed_label"], rows[0]["reviewer"] = "ham", "ana"
        rows[1]["reviewed_label"], rows[1]["reviewer"] = "spam", "ana"
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        import json

        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        rows[0].update(reviewed_label="ham", reviewer="ana")
        rows[1].update(reviewed_label="spam", reviewer="ana")
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    feedback = read_feedback(path, LABELS)
    assert len(feedback) == 2
    reviewed_ids = [f.item_id for f in feedback]
    gold = [
        LabelledItem(reviewed_ids[0], "old text", "spam", "sms-spam-collection"),
        LabelledItem("other", "o", "ham", "sms-spam-collection"),
    ]
    merged = {item.item_id: item for item in merge_feedback(gold, feedback)}
    assert merged[reviewed_ids[0]].label == "ham"
    assert merged[reviewed_ids[0]].source == f"review:ana:{path.name}"
    assert merged[reviewed_ids[1]].label == "spam" and merged[reviewed_ids[1]].source.startswith("review:ana")
    assert merged["other"].source == "sms-spam-collection"
    # Texts survive the CSV round trip exactly (quotes, newlines).
    original = {r.item_id: r.text for r in _queue()}
    assert all(f.text == original[f.item_id] for f in feedback)


def test_feedback_with_unknown_label_is_refused(tmp_path: Path) -> None:
    files = write_review_queue(_queue(), tmp_path)
    text = files.jsonl.read_text(encoding="utf-8").replace('"reviewed_label": ""', '"reviewed_label": "eggs"', 1)
    files.jsonl.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="reviewed_label 'eggs' is not one of"):
        read_feedback(files.jsonl, LABELS)
