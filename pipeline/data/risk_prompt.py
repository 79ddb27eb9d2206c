"""The risk-band prompt, its answer schema and business rules, and the parser that reads a profile back out.

The template and :func:`parse_prompt` live together on purpose: a rule-following fake responder
(``tests/fakes/risk_responder.py``) and the power benchmark decide the right band from the profile they read
out of a rendered prompt, so the prompt must carry the profile in a form the parser knows. Change one, change
the other; ``tests/test_profiles.py`` checks the round trip.

Templates use Python's ``str.format`` syntax (``{{``/``}}`` are literal braces), as :mod:`pipeline.prompts`
renders them; :func:`prompt_fields` returns every field the templates use.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.data.loaders import Item
from pipeline.data.profiles import (
    QUESTIONS,
    ClientProfile,
    ProfileVariant,
    questionnaire_text,
    scoring_rule_markdown,
)
from pipeline.extract import BusinessRule
from pipeline.llm.errors import OutputValidationError
from pipeline.stats.fairness import FairnessRow

__all__ = [
    "ALLOCATION_KEYS",
    "ALLOCATION_TOLERANCE",
    "ANSWER_SCHEMA",
    "BUSINESS_RULES",
    "SYSTEM_TEMPLATE",
    "USER_TEMPLATE",
    "ParsedPrompt",
    "allocation_sums_to_100",
    "band_in_range",
    "fairness_row",
    "parse_prompt",
    "profile_item",
    "prompt_fields",
]

SYSTEM_TEMPLATE = (
    "You are an investment adviser at a firm with a written risk-profiling rule. Place each client in the "
    "risk band the rule gives, propose an asset allocation that fits the band, and answer with JSON only."
)
"""Suggested system message (no placeholders)."""

USER_TEMPLATE = """\
Place this client in an investment risk band from 1 (very conservative) to 6 (very aggressive).

Client
Name: {name}
Age: {age}
Annual income: {income}
Net worth: {net_worth}
Investment horizon: {horizon_years} years
Investment experience: {experience}

Risk questionnaire (1 = strongly disagree, 5 = strongly agree):
{questionnaire}

The firm's scoring rule:
{scoring_rule}

Answer with one JSON object and nothing else:
{{"risk_band": <integer 1-6>, "allocation": {{"equities": <percent>, "bonds": <percent>, "cash": <percent>, \
"alternatives": <percent>}}, "confidence": <probability 0-1 that the band is right>, "rationale": "<one or two \
sentences>"}}
The four allocation percentages must sum to 100."""
"""Suggested user message; its fields are the keys of :func:`prompt_fields`."""

ALLOCATION_KEYS: tuple[str, ...] = ("equities", "bonds", "cash", "alternatives")
"""Asset classes of the allocation, in the order prompts list them."""
ALLOCATION_TOLERANCE = 0.5
"""How far (percentage points) the allocation may sum from 100 before the answer is invalid."""

ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "risk_band": {"type": "integer", "minimum": 1, "maximum": 6},
        "allocation": {
            "type": "object",
            "properties": {key: {"type": "number", "minimum": 0, "maximum": 100} for key in ALLOCATION_KEYS},
            "required": list(ALLOCATION_KEYS),
            "additionalProperties": False,
        },
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "rationale": {"type": "string"},
    },
    "required": ["risk_band", "allocation", "confidence", "rationale"],
    "additionalProperties": False,
}
"""JSON Schema of an answer (constrained decoding gets it; ``validate_answer`` checks it again)."""


def band_in_range(value: Any) -> str | None:
    """Business rule: ``risk_band`` is an integer 1..6 (caught here too when a model ignores the schema)."""
    band = value.get("risk_band") if isinstance(value, Mapping) else None
    if isinstance(band, bool) or not isinstance(band, int) or not 1 <= band <= 6:
        return f"risk_band must be an integer from 1 to 6, got {band!r}"
    return None


def allocation_sums_to_100(value: Any) -> str | None:
    """Business rule: the four allocation percentages sum to 100 (within :data:`ALLOCATION_TOLERANCE`)."""
    allocation = value.get("allocation") if isinstance(value, Mapping) else None
    if not isinstance(allocation, Mapping):
        return f"allocation must be an object with {', '.join(ALLOCATION_KEYS)}, got {allocation!r}"
    parts = [allocation.get(key) for key in ALLOCATION_KEYS]
    if any(isinstance(p, bool) or not isinstance(p, int | float) for p in parts):
        return f"allocation needs a number for each of {', '.join(ALLOCATION_KEYS)}, got {dict(allocation)!r}"
    total = float(sum(parts))  # type: ignore[arg-type]
    if abs(total - 100.0) > ALLOCATION_TOLERANCE:
        return f"allocation percentages sum to {total:g}, expected 100 (within {ALLOCATION_TOLERANCE}); rescale them"
    return None


BUSINESS_RULES: tuple[BusinessRule, ...] = (band_in_range, allocation_sums_to_100)
"""The rules an answer must pass after the schema (pass to ``pipeline.extract.validate_answer``)."""


def _dollars(amount: int) -> str:
    return f"${amount:,}"


def prompt_fields(variant: ProfileVariant) -> dict[str, Any]:
    """The item fields the templates use: name, first_name, last_name, age, income, net_worth,
    horizon_years, experience, questionnaire (text), scoring_rule (Markdown)."""
    p, d = variant.profile, variant.demographics
    return {
        "name": f"{d.first_name} {d.last_name}",
        "first_name": d.first_name,
        "last_name": d.last_name,
        "age": d.age,
        "income": _dollars(p.annual_income),
        "net_worth": _dollars(p.net_worth),
        "horizon_years": p.horizon_years,
        "experience": p.experience,
        "questionnaire": questionnaire_text(p.answers),
        "scoring_rule": scoring_rule_markdown(),
    }


def profile_item(variant: ProfileVariant) -> Item:
    """The experiment item of a variant: its id, :func:`prompt_fields`, and the right band as the gold label."""
    return Item(variant.variant_id, prompt_fields(variant), str(variant.true_band))


@dataclass(frozen=True)
class ParsedPrompt:
    """What :func:`parse_prompt` reads back out of a rendered user message."""

    profile: ClientProfile
    """The financial profile (``profile_id`` is empty: prompts do not carry it)."""
    first_name: str
    last_name: str
    age: int


_FIELD = {
    "name": re.compile(r"^Name: (\S+) (.+)$", re.MULTILINE),
    "age": re.compile(r"^Age: (\d+)$", re.MULTILINE),
    "income": re.compile(r"^Annual income: \$([\d,]+)$", re.MULTILINE),
    "net_worth": re.compile(r"^Net worth: \$([\d,]+)$", re.MULTILINE),
    "horizon": re.compile(r"^Investment horizon: (\d+) years$", re.MULTILINE),
    "experience": re.compile(r"^Investment experience: (\w+)$", re.MULTILINE),
}
_ANSWER = re.compile(r"^Q(\d+)\. .* Answer: ([1-5]) of 5$", re.MULTILINE)


def _one(key: str, text: str) -> re.Match[str]:
    match = _FIELD[key].search(text)
    if match is None:
        raise OutputValidationError(
            f"the prompt has no {key!r} line in the form {_FIELD[key].pattern!r}; render it with USER_TEMPLATE"
        )
    return match


def parse_prompt(text: str) -> ParsedPrompt:
    """Read the client back out of a prompt rendered from :data:`USER_TEMPLATE`; OutputValidationError if
    a line is missing."""
    name = _one("name", text)
    answers = {int(q): int(a) for q, a in _ANSWER.findall(text)}
    if sorted(answers) != list(range(1, len(QUESTIONS) + 1)):
        raise OutputValidationError(
            f"the prompt answers questions {sorted(answers)}, expected 1..{len(QUESTIONS)}; render it with "
            "USER_TEMPLATE"
        )
    profile = ClientProfile(
        profile_id="",
        annual_income=int(_one("income", text).group(1).replace(",", "")),
        net_worth=int(_one("net_worth", text).group(1).replace(",", "")),
        horizon_years=int(_one("horizon", text).group(1)),
        experience=_one("experience", text).group(1),
        answers=tuple(answers[i] for i in range(1, len(QUESTIONS) + 1)),
    )
    return ParsedPrompt(profile, name.group(1), name.group(2).strip(), int(_one("age", text).group(1)))


def fairness_row(variant: ProfileVariant, answer: Any) -> FairnessRow:
    """The audit row of one variant and its validated answer (None or an invalid answer -> no prediction)."""
    band: int | None = None
    confidence: float | None = None
    if isinstance(answer, Mapping) and band_in_range(answer) is None:
        band = int(answer["risk_band"])
        raw_confidence = answer.get("confidence")
        if isinstance(raw_confidence, int | float) and not isinstance(raw_confidence, bool):
            confidence = float(raw_confidence)
    return FairnessRow(
        item_id=variant.variant_id,
        pair_id=variant.pair_id,
        groups=variant.groups,
        true_band=variant.true_band,
        predicted_band=band,
        confidence=confidence,
    )
