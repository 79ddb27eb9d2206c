"""The LLM voter's pure parts: its prompt, the JSON schema of its answer, and reading an answer.

The calls themselves are a call stage of the experiment (planned only for the items the cheap tiers leave
unsettled); this module only builds messages and interprets text, so it is tested without a model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.ensemble.voter import VoterOutput, uniform_rows
from pipeline.extract import extract_json
from pipeline.llm.errors import OutputValidationError
from pipeline.prompts import render

__all__ = [
    "ABSTAIN_ANSWER",
    "DEFAULT_USER_TEMPLATE",
    "FewShotExample",
    "interpret_llm_answer",
    "llm_answer_schema",
    "llm_voter_messages",
]

DEFAULT_USER_TEMPLATE = "Text: {text}"
"""The user turn of each question and few-shot example; ``{text}`` is the text to classify."""

ABSTAIN_ANSWER = "ABSTAIN"
"""The label the model answers when it cannot tell."""


@dataclass(frozen=True)
class FewShotExample:
    """A labelled text shown to the model before the question."""

    text: str
    label: str


def llm_answer_schema(labels: Sequence[str]) -> dict[str, Any]:
    """JSON schema of the answer: ``{"label": <one of labels or "ABSTAIN">, "confidence": 0..1, "reason": str}``."""
    return {
        "type": "object",
        "properties": {
            "label": {"type": "string", "enum": [*labels, ABSTAIN_ANSWER]},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "reason": {"type": "string"},
        },
        "required": ["label", "confidence"],
        "additionalProperties": False,
    }


def _answer(label: str, confidence: float, reason: str) -> str:
    return json.dumps({"label": label, "confidence": confidence, "reason": reason})


def llm_voter_messages(
    text: str,
    labels: Sequence[str],
    few_shot: Sequence[FewShotExample] = (),
    task_description: str = "",
    label_descriptions: dict[str, str] | None = None,
    user_template: str = DEFAULT_USER_TEMPLATE,
) -> list[dict[str, str]]:
    """Chat messages asking for one label (or ABSTAIN) and a confidence, as JSON matching the answer schema.

    Few-shot examples become user/assistant turns, so the model sees the exact answer format. Every user turn
    is ``user_template`` with ``{text}`` filled in (an experiment's ``prompts.user``; its wording is versioned).
    """
    descriptions = label_descriptions or {}
    label_lines = "\n".join(
        f"- {label}: {descriptions[label]}" if descriptions.get(label) else f"- {label}" for label in labels
    )
    system = (
        f"You classify texts{': ' + task_description if task_description else ''}.\n"
        f"Labels:\n{label_lines}\n"
        f'Answer with JSON only: {{"label": one of {[*labels, ABSTAIN_ANSWER]}, "confidence": a number from 0 to 1, '
        f'"reason": a short phrase}}. Answer "{ABSTAIN_ANSWER}" when the text does not let you decide.'
    )
    messages = [{"role": "system", "content": system}]
    for example in few_shot:
        messages.append({"role": "user", "content": render(user_template, {"text": example.text}, "user")})
        messages.append({"role": "assistant", "content": _answer(example.label, 0.95, "example")})
    messages.append({"role": "user", "content": render(user_template, {"text": text}, "user")})
    return messages


def interpret_llm_answer(
    answer: str, labels: Sequence[str], min_confidence: float = 0.0, voter: str = "llm"
) -> VoterOutput:
    """Read one answer into a one-row VoterOutput.

    The named label gets the stated confidence and the rest share the remainder. ABSTAIN, a confidence below
    ``min_confidence``, an unknown label or an unreadable answer all become an abstention whose explanation
    says which.
    """
    k = len(labels)
    proba = uniform_rows(1, k)
    abstain = True
    try:
        value = extract_json(answer)
        if not isinstance(value, dict):
            raise OutputValidationError(f"expected a JSON object, got {type(value).__name__}")
        label = str(value.get("label", "")).strip()
        confidence = float(value.get("confidence", float("nan")))
        reason = str(value.get("reason", ""))[:200]
        if not 0.0 <= confidence <= 1.0:
            explanation = f"unreadable answer: confidence {value.get('confidence')!r} is not in [0, 1]"
        elif label.upper() == ABSTAIN_ANSWER:
            explanation = f"LLM abstained: {reason}"
        elif label not in labels:
            explanation = f"unreadable answer: label {label!r} is not one of {list(labels)}"
        elif confidence < min_confidence:
            explanation = f"LLM unsure: {label} at {confidence:.2f} < {min_confidence:.2f}"
        else:
            proba[0] = (1.0 - confidence) / (k - 1)
            proba[0, list(labels).index(label)] = confidence
            # A confidence below 1/k would make another label the argmax; the stated label must win.
            if proba[0].argmax() != list(labels).index(label):
                proba[0] = uniform_rows(1, k)[0]
                proba[0, list(labels).index(label)] += 1e-6
                proba[0] /= proba[0].sum()
            abstain = False
            explanation = f"LLM: {label} {confidence:.2f} ({reason})"
    except (OutputValidationError, TypeError, ValueError) as exc:
        explanation = f"unreadable answer: {exc}"
    return VoterOutput(voter, tuple(labels), proba, np.array([abstain]), (explanation,))
