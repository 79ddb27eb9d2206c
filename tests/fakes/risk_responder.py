"""Rule-following responders for the risk-fairness experiment, for tests and benchmarks.

A responder reads the rendered prompt out of the request body (the dict the fake server's ``Responder``
receives), parses the client with :func:`pipeline.data.risk_prompt.parse_prompt`, applies the scoring rule and
answers JSON in the shape of :data:`pipeline.data.risk_prompt.ANSWER_SCHEMA`.

- :func:`unbiased_responder`: the right band whatever the name.
- :func:`make_unbiased_responder`: the same with symmetric noise (a share of answers one band off, up or down
  at random), so a power study has errors that do not depend on the group.
- :func:`make_biased_responder`: over-risks one group (read from the client's name and age) by ``shift``
  bands in a ``fraction`` of its answers, on top of the same noise.

Random choices are keyed on the seed and the prompt text, so an answer does not depend on the order of calls
(the fake server may answer concurrently).

Run as the fake server's responder: ``--responder tests.fakes.risk_responder:unbiased_responder``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

from pipeline.data.demographic_names import load_name_lists
from pipeline.data.profiles import age_group_of, risk_band
from pipeline.data.risk_prompt import ParsedPrompt, parse_prompt

RiskResponder = Callable[[dict[str, Any]], str]

# Allocation (equities, bonds, cash, alternatives) per band; every row sums to 100.
_ALLOCATIONS: dict[int, tuple[int, int, int, int]] = {
    1: (10, 50, 40, 0),
    2: (25, 55, 20, 0),
    3: (40, 45, 10, 5),
    4: (55, 30, 10, 5),
    5: (70, 20, 5, 5),
    6: (85, 5, 0, 10),
}


def _user_text(request: Mapping[str, Any]) -> str:
    messages = request.get("messages") or []
    users = [m.get("content", "") for m in messages if isinstance(m, Mapping) and m.get("role") == "user"]
    if not users or not isinstance(users[-1], str):
        raise ValueError("the request has no user message with text content; send the rendered USER_TEMPLATE")
    return users[-1]


def _uniform(seed: int, text: str, purpose: str) -> float:
    digest = hashlib.sha256(f"{seed}|{purpose}|{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _groups(parsed: ParsedPrompt) -> dict[str, str]:
    groups = load_name_lists().groups_of(parsed.first_name, parsed.last_name)
    groups["age_group"] = age_group_of(parsed.age)
    return groups


def answer_json(band: int, confidence: float = 0.8) -> str:
    """The JSON answer for a band: the band's allocation, the confidence and a one-line rationale."""
    equities, bonds, cash, alternatives = _ALLOCATIONS[band]
    return json.dumps(
        {
            "risk_band": band,
            "allocation": {"equities": equities, "bonds": bonds, "cash": cash, "alternatives": alternatives},
            "confidence": confidence,
            "rationale": f"The scoring rule places this client in band {band}.",
        }
    )


def _noisy(band: int, text: str, noise: float, seed: int) -> int:
    if noise <= 0 or _uniform(seed, text, "noise") >= noise:
        return band
    step = 1 if _uniform(seed, text, "noise-direction") < 0.5 else -1
    # At the ends of the scale the only wrong neighbour is inward.
    return band + step if 1 <= band + step <= 6 else band - step


def make_unbiased_responder(noise: float = 0.0, seed: int = 0, confidence: float = 0.8) -> RiskResponder:
    """A responder that gives the right band, except a ``noise`` share of answers one band off at random."""
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must lie in [0, 1], got {noise!r}")

    def respond(request: dict[str, Any]) -> str:
        text = _user_text(request)
        band = risk_band(parse_prompt(text).profile)
        return answer_json(_noisy(band, text, noise, seed), confidence)

    return respond


unbiased_responder: RiskResponder = make_unbiased_responder()
"""The right band whatever the name."""


def make_biased_responder(
    group: str | Mapping[str, str],
    shift: int = 1,
    fraction: float = 1.0,
    seed: int = 0,
    noise: float = 0.0,
    confidence: float = 0.8,
) -> RiskResponder:
    """A responder that moves ``fraction`` of one group's answers ``shift`` bands up (clipped to 1..6).

    ``group`` is ``"attribute=value"`` (e.g. ``"ethnicity=black"``) or a mapping of several attributes that
    must all match (e.g. ``{"gender": "female", "ethnicity": "hispanic"}``). Which answers move is decided by
    a hash of the seed and the prompt, so it is the same on every call.
    """
    if isinstance(group, str):
        attribute, sep, value = group.partition("=")
        if not sep:
            raise ValueError(f"group {group!r} must look like 'attribute=value', e.g. 'ethnicity=black'")
        target = {attribute.strip(): value.strip()}
    else:
        target = dict(group)
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction!r}")

    def respond(request: dict[str, Any]) -> str:
        text = _user_text(request)
        parsed = parse_prompt(text)
        band = _noisy(risk_band(parsed.profile), text, noise, seed)
        groups = _groups(parsed)
        if all(groups.get(k) == v for k, v in target.items()) and _uniform(seed, text, "bias") < fraction:
            band = min(6, max(1, band + shift))
        return answer_json(band, confidence)

    return respond
