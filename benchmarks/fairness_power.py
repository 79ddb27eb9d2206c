"""Power and false-alarm rate of the risk-fairness audit, with rule-following fake responders.

Every repetition draws a fresh counterfactual sample (``n`` profiles x 8 gender x ethnicity variants), renders
each variant's prompt with the suggested template, answers it in-process with a responder from
``tests/fakes/risk_responder.py`` (no HTTP: the server adds nothing to a power study) and audits the answers.

- Power: the planted-bias responder moves 10% of one group's answers (ethnicity=black) one band up. The audit
  "detects" it when the ethnicity verdict reports a difference after Holm correction. Sizes are tried in
  increasing order; the first with power >= 80% is reported.
- False alarms: the unbiased responder (same noise, no bias); a false alarm is any verdict, on any attribute,
  reporting a difference. Target: at most the nominal 5%.

Both responders make ``--noise`` of their answers one band off at random (default 10%), independent of the
name, so there is disagreement between variants for the tests to weigh; with no noise the unbiased responder
can never raise an alarm.

Runs:
    python benchmarks/fairness_power.py --quick   # < 2 min: 96 and 192 profiles x 40 reps, 200 null reps
    python benchmarks/fairness_power.py           # full (~10 min): up to 10 sizes x 200 repetitions, 500 null
                                                  # repetitions at the size found
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from pipeline.data.profiles import ProfileSampleConfig, generate_variants  # noqa: E402
from pipeline.data.risk_prompt import SYSTEM_TEMPLATE, USER_TEMPLATE, fairness_row, prompt_fields  # noqa: E402
from pipeline.prompts import render  # noqa: E402
from pipeline.stats.fairness import FairnessConfig, FairnessRow, audit  # noqa: E402
from pipeline.stats.proportions import wilson_interval  # noqa: E402
from tests.fakes.risk_responder import RiskResponder, make_biased_responder, make_unbiased_responder  # noqa: E402

TARGET_POWER = 0.80
TARGET_FALSE_ALARM = 0.05
BIASED_GROUP = "ethnicity=black"
BIAS_FRACTION = 0.10


@dataclass(frozen=True)
class Rate:
    """Share of repetitions with a finding."""

    hits: int
    repetitions: int

    @property
    def rate(self) -> float:
        return self.hits / self.repetitions

    def text(self) -> str:
        ci = wilson_interval(self.hits, self.repetitions)
        return f"{self.rate:6.1%} [{ci.low:.1%}, {ci.high:.1%}] ({self.hits}/{self.repetitions})"


def _rows(n_profiles: int, seed: int, responder: RiskResponder) -> list[FairnessRow]:
    rows = []
    for variant in generate_variants(ProfileSampleConfig(n_profiles=n_profiles, seed=seed)):
        request = {
            "messages": [
                {"role": "system", "content": SYSTEM_TEMPLATE},
                {"role": "user", "content": render(USER_TEMPLATE, prompt_fields(variant))},
            ]
        }
        rows.append(fairness_row(variant, json.loads(responder(request))))
    return rows


def _config(seed: int) -> FairnessConfig:
    # No bootstrap intervals: verdicts do not use them, and they would cost most of the time.
    return FairnessConfig(min_cell_size=10, bootstrap_resamples=0, monte_carlo_resamples=1000, seed=seed)


def power(n_profiles: int, repetitions: int, noise: float) -> Rate:
    """Share of repetitions whose ethnicity verdict reports the planted bias."""
    hits = 0
    for rep in range(repetitions):
        responder = make_biased_responder(BIASED_GROUP, shift=1, fraction=BIAS_FRACTION, seed=rep, noise=noise)
        result = audit(_rows(n_profiles, 10_000 + rep, responder), _config(rep))
        verdict = next(v for v in result.verdicts if v.attribute == "ethnicity")
        hits += verdict.significant
    return Rate(hits, repetitions)


def false_alarms(n_profiles: int, repetitions: int, noise: float) -> Rate:
    """Share of repetitions where an unbiased responder gets any significant verdict."""
    hits = 0
    for rep in range(repetitions):
        responder = make_unbiased_responder(noise=noise, seed=rep)
        result = audit(_rows(n_profiles, 20_000 + rep, responder), _config(rep))
        hits += any(v.significant for v in result.verdicts)
    return Rate(hits, repetitions)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 sizes x 40 repetitions, 200 null repetitions")
    parser.add_argument("--noise", type=float, default=0.10, help="share of answers one band off at random")
    args = parser.parse_args(argv)
    sizes = [96, 192] if args.quick else [24, 48, 72, 96, 120, 144, 168, 192, 240, 288]
    repetitions = 40 if args.quick else 200
    null_repetitions = 200 if args.quick else 500
    start = time.perf_counter()
    print(
        f"Planted bias: {BIAS_FRACTION:.0%} of {BIASED_GROUP} answers one band up; noise {args.noise:.0%} of all "
        f"answers one band off; 8 variants per profile; Holm at alpha 0.05."
    )
    found: int | None = None
    for n in sizes:
        rate = power(n, repetitions, args.noise)
        status = "met" if rate.rate >= TARGET_POWER else "below"
        print(f"power at {n:4d} profiles ({8 * n:5d} prompts): {rate.text()}  target >= {TARGET_POWER:.0%}: {status}")
        if rate.rate >= TARGET_POWER:
            found = n
            break
    if found is None:
        print(f"smallest size with {TARGET_POWER:.0%} power: MISSED (none up to {sizes[-1]} profiles)")
        null_size = sizes[-1]
    else:
        print(f"smallest size with {TARGET_POWER:.0%} power: {found} profiles ({8 * found} prompts) (of {sizes})")
        null_size = found
    alarms = false_alarms(null_size, null_repetitions, args.noise)
    verdict = "met" if alarms.rate <= TARGET_FALSE_ALARM else "MISSED"
    print(
        f"false-alarm rate at {null_size} profiles, unbiased responder: {alarms.text()}  "
        f"target <= {TARGET_FALSE_ALARM:.0%}: {verdict}"
    )
    print(f"elapsed {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
