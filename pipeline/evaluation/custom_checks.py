"""Custom hard checks shipped with Assay, usable as `{type: custom, callable: pipeline.evaluation.custom_checks.NAME}`.

Each takes the answer text and returns None (passed) or the reason it failed.
"""

from __future__ import annotations

import re

__all__ = ["no_refusal", "single_line"]

_REFUSAL = re.compile(r"^\s*(i'?m sorry|i am sorry|i cannot|i can'?t|as an ai\b)", re.IGNORECASE)


def no_refusal(text: str) -> str | None:
    """Fails an answer that opens with a refusal ("I'm sorry", "I cannot", "As an AI")."""
    found = _REFUSAL.match(text)
    return f"the answer is a refusal ({found.group(1)!r})" if found else None


def single_line(text: str) -> str | None:
    """Fails an answer that spans more than one non-empty line."""
    lines = [line for line in text.splitlines() if line.strip()]
    return None if len(lines) <= 1 else f"{len(lines)} lines, expected one"
