"""Extraction: JSON out of a model's free text, validated against a schema and business rules.

Models wrap JSON in code fences, add prose around it, or answer with something else entirely. `extract_json`
finds the first complete JSON object (or array) in the text; `validate_answer` checks it against the JSON
Schema and then the experiment's business rules. The raw text is always kept by the caller.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jsonschema

from pipeline.llm.errors import OutputValidationError

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)

BusinessRule = Callable[[Any], str | None]
"""A rule returns None when the answer is fine, else the reason it is not."""


@dataclass(frozen=True)
class Extraction:
    """The outcome of extracting and validating one answer."""

    value: Any
    valid: bool
    reason: str  # '' when valid


def extract_json(text: str) -> Any:
    """The first JSON object or array in `text` (fenced or bare); OutputValidationError if there is none."""
    if not text or not text.strip():
        raise OutputValidationError("the answer is empty")
    candidates = [match.group(1) for match in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for candidate in candidates:
        for index, char in enumerate(candidate):
            if char not in "{[":
                continue
            try:
                value, _ = decoder.raw_decode(candidate, index)
            except json.JSONDecodeError:
                continue
            return value
    preview = text.strip().replace("\n", " ")[:80]
    raise OutputValidationError(f"no JSON object found in the answer (it starts {preview!r})")


def validate_answer(value: Any, schema: dict[str, Any] | None, rules: tuple[BusinessRule, ...] = ()) -> str | None:
    """None if `value` satisfies `schema` and every rule, else the first reason it does not."""
    if schema is not None:
        error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(value))
        if error is not None:
            where = "/".join(str(part) for part in error.absolute_path) or "the answer"
            return f"{where}: {error.message}"
    for rule in rules:
        reason = rule(value)
        if reason:
            return reason
    return None


def extract_and_validate(text: str, schema: dict[str, Any] | None, rules: tuple[BusinessRule, ...] = ()) -> Extraction:
    """Extract JSON from `text` and validate it; never raises for a bad answer."""
    try:
        value = extract_json(text)
    except OutputValidationError as exc:
        return Extraction(None, False, str(exc))
    reason = validate_answer(value, schema, rules)
    return Extraction(value, reason is None, reason or "")
