"""The rules DSL: decision order, explanations, safety triggers, and load-time errors naming rule and file."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.ensemble.rules import RulesVoter, load_rules, parse_rules
from pipeline.llm.errors import ConfigError

LABELS = ("ham", "spam")
RULES = """
format_version: 1
rules:
  - {name: weak_ham, pattern: '\\blol\\b', label: ham, priority: 1, confidence: 0.8}
  - {name: prize, pattern: 'prize', label: spam, priority: 10, confidence: 0.95}
  - {name: fraud_alarm, pattern: 'bank details', label: spam, safety: force}
  - {name: minors, pattern: 'school ?girl', label: spam, safety: escalate, priority: 5}
"""


def test_highest_priority_rule_decides_and_is_named() -> None:
    voter = RulesVoter(parse_rules(RULES, LABELS))
    out = voter.predict_proba(["lol you won a prize", "lol ok", "see you at 5"])
    assert out.predicted() == ["spam", "ham", None]
    assert out.explanations[0].startswith("rule prize -> spam") and "also fired: weak_ham" in out.explanations[0]
    assert out.proba[0].tolist() == pytest.approx([0.05, 0.95])
    assert bool(out.abstain[2]) and out.explanations[2] == "no rule fired"


def test_safety_rules_outrank_priority() -> None:
    voter = RulesVoter(parse_rules(RULES, LABELS))
    out = voter.predict_proba(["prize! send your bank details", "schoolgirl prize", "prize"])
    assert out.safety == ("force", "escalate", None)
    assert out.safety_labels == ("spam", "spam", None)
    assert "fraud_alarm" in out.explanations[0] and "minors" in out.explanations[1]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rules:\n  - {name: broken, pattern: '(unclosed', label: spam}", "rule 'broken' has a bad regex '(unclosed'"),
        ("rules:\n  - {name: odd, pattern: 'x', label: eggs}", "rule 'odd' votes label 'eggs'"),
        ("rules:\n  - {name: a, pattern: 'x', label: ham}\n  - {name: a, pattern: 'y', label: ham}", "defined twice"),
        ("rules:\n  - {name: c, pattern: 'x', label: ham, confidence: 2}", "rule 'c': field confidence"),
        ("rules:\n  - {name: s, pattern: 'x', label: ham, safety: panic}", "rule 's': field safety"),
        ("format_version: 2\nrules: []", "format_version"),
    ],
)
def test_bad_rules_fail_at_load_naming_rule_and_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_rules(path, LABELS)
    assert message in str(info.value)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_rules_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="rules file .* not found"):
        load_rules(tmp_path / "nope.yaml", LABELS)


@pytest.mark.parametrize("task", ["sms", "birdflu"])
def test_shipped_rules_load(task: str) -> None:
    from pipeline.ensemble.task_config import load_task_config

    config = load_task_config(task)
    rules = load_rules(config.resolve(config.voters.rules.file), config.label_names)
    assert rules.rules


def test_birdflu_rules_fire_on_their_terms() -> None:
    from pipeline.ensemble.task_config import load_task_config

    config = load_task_config("birdflu")
    voter = RulesVoter(load_rules(config.resolve(config.voters.rules.file), config.label_names))
    out = voter.predict_proba(
        [
            "H5N8 confirmed in ducks",
            "Bird flu reaches the county",
            "10,000 chickens culled on a farm",
            "A poultry worker tested positive for H5N1",
            "The flu shot is available now",
        ]
    )
    assert out.predicted() == ["relevant", "relevant", "relevant", "relevant", "irrelevant"]
    assert out.safety[3] == "escalate"
