"""The rules voter: a small YAML regex DSL with priorities, labels and safety triggers.

A rules file looks like::

    format_version: 1
    rules:
      - name: prize_claim            # unique; every decision names the rule that fired
        pattern: '\\b(won|claim)\\b.*\\bprize'
        label: spam
        priority: 10                 # the highest-priority firing rule decides
        confidence: 0.95             # probability given to its label
        safety: null                 # or 'force' (label is final) or 'escalate' (never settled cheaply)
        case_sensitive: false

A safety rule outranks every ordinary rule. A bad regex, an unknown label or a duplicate name fails at load,
naming the rule and the file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.data.labelled import LabelledItem
from pipeline.ensemble.voter import SafetyAction, VoterOutput, uniform_rows
from pipeline.llm.errors import ConfigError

__all__ = ["RULES_FORMAT_VERSION", "Rule", "RuleSet", "RulesVoter", "load_rules", "parse_rules"]

RULES_FORMAT_VERSION = 1
"""Version of the rules file layout."""


class _RuleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    name: str = Field(min_length=1)
    """Unique rule name; decisions cite it."""
    pattern: str = Field(min_length=1)
    """Python regular expression searched for in the text."""
    label: str
    """Label the rule votes for."""
    priority: int = 0
    """Higher wins when several rules fire."""
    confidence: float = Field(default=0.9, gt=0, le=1)
    """Probability the rule gives its label."""
    safety: Literal["force", "escalate"] | None = None
    """``force``: the label is final; ``escalate``: the item is never settled by the cheap tiers."""
    case_sensitive: bool = False
    """Match case exactly (default: ignore case)."""


class _RulesFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: Literal[1] = 1
    rules: list[dict[str, object]]


@dataclass(frozen=True)
class Rule:
    """One compiled rule."""

    name: str
    regex: re.Pattern[str]
    label: str
    priority: int
    confidence: float
    safety: SafetyAction | None


@dataclass(frozen=True)
class RuleSet:
    """Compiled rules in decision order (safety rules first, then by priority, then file order)."""

    rules: tuple[Rule, ...]
    labels: tuple[str, ...]
    source: str

    def fired(self, text: str) -> list[Rule]:
        """The rules that match ``text``, in decision order."""
        return [rule for rule in self.rules if rule.regex.search(text)]

    def label_matrix(self, texts: Sequence[str]) -> np.ndarray:
        """Shape (n, rules): the label index each rule votes on each text, -1 where it does not fire."""
        index = {label: i for i, label in enumerate(self.labels)}
        out = np.full((len(texts), len(self.rules)), -1, dtype=np.int64)
        for j, rule in enumerate(self.rules):
            for i, text in enumerate(texts):
                if rule.regex.search(text):
                    out[i, j] = index[rule.label]
        return out


def parse_rules(text: str, labels: Sequence[str], source: str = "<rules>") -> RuleSet:
    """Compile a rules file's text.

    Raises:
        ConfigError: Bad YAML, a bad field, a bad regex, an unknown label or a duplicate name (one line each,
            naming the rule and ``source``).
    """
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({str(exc).splitlines()[0]}); fix the syntax") from exc
    try:
        parsed = _RulesFile.model_validate(raw if isinstance(raw, dict) else {"rules": raw})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{source}: {where}: {first['msg']}; expected format_version: 1 and a list 'rules'") from exc
    compiled: list[Rule] = []
    seen: set[str] = set()
    for position, entry in enumerate(parsed.rules, start=1):
        name = str(entry.get("name", f"#{position}"))
        try:
            spec = _RuleSpec.model_validate(entry)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"{source}: rule {name!r}: field {where}: {first['msg']}; fix that rule") from exc
        if spec.name in seen:
            raise ConfigError(f"{source}: rule {spec.name!r} is defined twice; rule names must be unique")
        seen.add(spec.name)
        if spec.label not in labels:
            raise ConfigError(
                f"{source}: rule {spec.name!r} votes label {spec.label!r}, which is not one of {list(labels)}"
            )
        try:
            regex = re.compile(spec.pattern, 0 if spec.case_sensitive else re.IGNORECASE)
        except re.error as exc:
            raise ConfigError(
                f"{source}: rule {spec.name!r} has a bad regex {spec.pattern!r}: {exc}; fix the pattern"
            ) from exc
        compiled.append(Rule(spec.name, regex, spec.label, spec.priority, spec.confidence, spec.safety))
    # Stable sort: ties keep file order, so a rules file reads top-down like a firewall.
    ordered = sorted(compiled, key=lambda r: (r.safety is None, -r.priority))
    return RuleSet(tuple(ordered), tuple(labels), source)


def load_rules(path: str | Path, labels: Sequence[str]) -> RuleSet:
    """Compile the rules file at ``path`` (see :func:`parse_rules`)."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"rules file {file} not found; create it (format_version: 1, rules: [...]) or fix the path")
    return parse_rules(file.read_text(encoding="utf-8"), labels, str(file))


@dataclass(frozen=True)
class RulesVoter:
    """Votes the label of the first rule that fires; abstains when none does. Needs no training."""

    rule_set: RuleSet
    name: str = "rules"
    training_hash: str = ""

    @property
    def labels(self) -> tuple[str, ...]:
        """Probability-column order."""
        return self.rule_set.labels

    def fit(self, train: Sequence[LabelledItem]) -> RulesVoter:
        """Rules are written, not learned: returns itself."""
        return self

    def predict_proba(self, texts: Sequence[str]) -> VoterOutput:
        """The deciding rule's label with its confidence, the rest spread evenly; explanations name the rule."""
        k = len(self.labels)
        proba = uniform_rows(len(texts), k)
        abstain = np.ones(len(texts), dtype=bool)
        explanations: list[str] = []
        safety: list[SafetyAction | None] = []
        safety_labels: list[str | None] = []
        index = {label: i for i, label in enumerate(self.labels)}
        for i, text in enumerate(texts):
            fired = self.rule_set.fired(text)
            if not fired:
                explanations.append("no rule fired")
                safety.append(None)
                safety_labels.append(None)
                continue
            rule = fired[0]
            proba[i] = (1.0 - rule.confidence) / (k - 1)
            proba[i, index[rule.label]] = rule.confidence
            abstain[i] = False
            others = f"; also fired: {', '.join(r.name for r in fired[1:])}" if len(fired) > 1 else ""
            kind = f" [safety: {rule.safety}]" if rule.safety else ""
            explanations.append(f"rule {rule.name} -> {rule.label}{kind}{others}")
            safety.append(rule.safety)
            safety_labels.append(rule.label if rule.safety else None)
        return VoterOutput(
            self.name, self.labels, proba, abstain, tuple(explanations), tuple(safety), tuple(safety_labels)
        )
