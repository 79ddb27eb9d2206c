"""The arbiter cascade's early exits, conformal tier, LLM merge, record round trip and out-of-fold alignment."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from pipeline.data.labelled import LabelledItem
from pipeline.ensemble.arbiter import (
    Arbiter,
    fit_stacker,
    out_of_fold_outputs,
    read_pass,
    unsettled_items,
    write_pass,
)
from pipeline.ensemble.llm_voter import interpret_llm_answer
from pipeline.ensemble.task_config import ArbiterConfig
from pipeline.ensemble.voter import SafetyAction, VoterOutput

LABELS = ("ham", "spam")


def _out(name: str, p_spam: list[float | None], safety: list[SafetyAction | None] | None = None) -> VoterOutput:
    proba = np.array([[0.5, 0.5] if p is None else [1 - p, p] for p in p_spam])
    abstain = np.array([p is None for p in p_spam])
    safety_t = tuple(safety) if safety else ()
    labels = tuple("spam" if s else None for s in safety) if safety else ()
    return VoterOutput(name, LABELS, proba, abstain, tuple(f"{name} says" for _ in p_spam), safety_t, labels)


def _arbiter() -> tuple[Arbiter, list[VoterOutput]]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    a = np.clip(np.where(y == 1, 0.8, 0.2) + rng.normal(0, 0.15, 400), 0.01, 0.99)
    b = np.clip(np.where(y == 1, 0.7, 0.3) + rng.normal(0, 0.2, 400), 0.01, 0.99)
    train = [_out("rules", [None] * 400), _out("a", a.tolist()), _out("b", b.tolist())]
    stacker = fit_stacker(train, [LABELS[i] for i in y])
    arbiter = Arbiter(LABELS, ArbiterConfig(consensus_confidence=0.95, consensus_min_voters=2), stacker)
    return arbiter.calibrate(train, [LABELS[i] for i in y], [()] * 400, [], alpha=0.1), train


def test_early_exits_and_conformal_tier() -> None:
    arbiter, _ = _arbiter()
    outputs = [
        _out("rules", [0.95, None, 0.95, None, None], ["force", None, "escalate", None, None]),
        _out("a", [0.1, 0.99, 0.99, 0.5, 0.02]),
        _out("b", [0.1, 0.98, 0.99, 0.5, 0.6]),
    ]
    result = arbiter.first_pass(["forced", "agree", "escalated", "unsure", "split"], outputs, [()] * 5)
    tiers = [d.tier for d in result.decisions]
    assert tiers[:3] == ["safety", "consensus", "unsettled"]
    assert result.decisions[0].label == "spam" and "rules" in result.decisions[0].reason
    assert result.decisions[1].label == "spam" and "consensus of a, b" in result.decisions[1].reason
    assert "safety escalation" in result.decisions[2].reason
    # 0.5/0.5 voters: the stacker is unsure, so the conformal set is not a single label (empty or both).
    assert tiers[3] == "unsettled" and len(result.decisions[3].prediction_set) != 1
    assert unsettled_items(result) == tuple(d.item_id for d in result.decisions if not d.settled)
    assert "escalated" in unsettled_items(result) and "forced" not in unsettled_items(result)


def test_consensus_needs_agreement_and_confidence() -> None:
    arbiter, _ = _arbiter()
    disagree = [_out("rules", [None]), _out("a", [0.99]), _out("b", [0.01])]
    weak = [_out("rules", [None]), _out("a", [0.99]), _out("b", [0.9])]
    assert not arbiter.consensus_mask(disagree)[0]
    assert not arbiter.consensus_mask(weak)[0]


def test_confident_stacker_settles_at_conformal_tier() -> None:
    arbiter, _ = _arbiter()
    outputs = [_out("rules", [None]), _out("a", [0.97]), _out("b", [0.9])]
    decision = arbiter.first_pass(["x"], outputs, [()]).decisions[0]
    assert decision.tier == "conformal" and decision.settled and decision.label == "spam"
    assert decision.prediction_set == ("spam",)


def test_uncalibrated_arbiter_settles_nothing_past_consensus() -> None:
    arbiter, _ = _arbiter()
    raw = Arbiter(arbiter.labels, arbiter.config, arbiter.stacker)
    outputs = [_out("rules", [None]), _out("a", [0.97]), _out("b", [0.9])]
    assert raw.first_pass(["x"], outputs, [()]).decisions[0].tier == "unsettled"


def test_final_pass_merges_llm_answers(tmp_path: Path) -> None:
    arbiter, _ = _arbiter()
    outputs = [_out("rules", [None] * 4), _out("a", [0.5, 0.5, 0.5, 0.99]), _out("b", [0.5, 0.5, 0.5, 0.99])]
    first = arbiter.first_pass(["p", "q", "r", "s"], outputs, [()] * 4)
    assert unsettled_items(first) == ("p", "q", "r")
    llm = {
        "p": interpret_llm_answer('{"label": "spam", "confidence": 0.9}', LABELS, min_confidence=0.7),
        "q": interpret_llm_answer('{"label": "ABSTAIN", "confidence": 0.2}', LABELS),
    }
    final = arbiter.final_pass(first, llm)
    by_id = {d.item_id: d for d in final.decisions}
    assert (by_id["p"].tier, by_id["p"].label) == ("llm", "spam")
    assert by_id["q"].tier == "abstain" and "abstained" in by_id["q"].reason
    assert by_id["r"].tier == "abstain" and "no LLM answer" in by_id["r"].reason
    assert by_id["s"].tier == "consensus"
    path = write_pass(final, tmp_path / "final.jsonl")
    assert read_pass(path) == final


def test_read_pass_rejects_other_format_version(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"format_version": 99, "labels": [], "stage": "first"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="format_version 99"):
        read_pass(path)


@dataclass(frozen=True)
class _Memoriser:
    """Predicts the label it saw for a text in training, else abstains: exposes leakage and misalignment."""

    name: str = "memo"

    def fit(self, train: list[LabelledItem]) -> _TrainedMemo:
        return _TrainedMemo({i.text: i.label or "" for i in train})


@dataclass(frozen=True)
class _TrainedMemo:
    seen: dict[str, str]
    name: str = "memo"
    labels: tuple[str, ...] = LABELS
    training_hash: str = ""

    def predict_proba(self, texts: list[str]) -> VoterOutput:
        p = [None if t not in self.seen else float(self.seen[t] == "spam") for t in texts]
        return _out("memo", p)


def test_out_of_fold_rows_come_from_models_that_never_saw_them_and_stay_aligned() -> None:
    train = [LabelledItem(f"i{n}", f"text {n}", "spam" if n % 3 == 0 else "ham") for n in range(30)]
    (oof,) = out_of_fold_outputs([_Memoriser()], train, folds=3, seed=0)
    assert len(oof) == 30
    assert oof.abstain.all()  # no row was predicted by a model trained on it
    assert oof.explanations == tuple("memo says" for _ in range(30))
