"""How two answers are compared: the one place that decides whether an answer equals the expected one.

Gold evaluation, model comparison and canary drift must agree on what "the same answer" means, or a canary
could report drift that the gold evaluation calls a match. Strings are compared stripped and case-folded
(a model's "Sports " is the label "sports"); numbers as floats, so 3 and 3.0 match (booleans stay booleans);
anything else (lists, objects) by equality of its canonical JSON.
"""

from __future__ import annotations

import json
import math
import numbers
from typing import Any, TypeGuard

__all__ = ["answers_match", "is_number", "normalize_answer"]


def is_number(value: Any) -> TypeGuard[float]:
    """True for int and float values (not bool, not NaN): the answers MAE is defined on."""
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and not (isinstance(value, float) and math.isnan(value))
    )


def normalize_answer(value: Any) -> Any:
    """The comparable form of an answer: None stays None (an invalid answer matches nothing)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip().casefold()
    if is_number(value):
        return float(value)
    if isinstance(value, bool):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def answers_match(expected: Any, answer: Any) -> bool:
    """Whether `answer` counts as `expected` (None, a missing or invalid answer, never does)."""
    if answer is None or expected is None:
        return False
    return bool(normalize_answer(expected) == normalize_answer(answer))
