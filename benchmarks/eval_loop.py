"""Speed of the evaluation loop's pure stages on synthetic data: they must never be what a run waits for.

For --items answers (default 10,000) it times, best of --repeats runs:

  gold evaluation   evaluate_answers on labels with 10 tags (Wilson intervals), target < 1 s
  gold MAE          evaluate_answers on numbers (bootstrap MAE intervals, 2000 resamples, 10 tags), target < 5 s
  hard checks       run_checks with 6 checks per answer, target >= 20,000 check results/s
  judge parsing     parse_judgement of fenced, prose-wrapped answers, target >= 10,000/s
  votes + flaky     votes_by_item and find_flaky over 3 repeats per item, target >= 30,000 judgements/s
  krippendorff      nominal alpha of 5 raters on --items units with 10% missing, target < 1 s

    python benchmarks/eval_loop.py [--items 10000] [--repeats 3]

Prints each figure next to its target (MISSED when it misses); exit status 1 if any is missed.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from pipeline.evaluation.checks import load_checks, run_checks  # noqa: E402
from pipeline.evaluation.gold import GoldItem, evaluate_answers  # noqa: E402
from pipeline.evaluation.judges import JudgeConfig, find_flaky, parse_judgement, votes_by_item  # noqa: E402
from pipeline.stats.agreement import krippendorff_alpha  # noqa: E402

LABELS = ["sports", "cooking", "computing", "weather"]


def best_of(repeats: int, work: Callable[[], object]) -> float:
    """Fastest wall time of `repeats` runs, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    """Run every stage and print its figure against its target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    n, rng = args.items, random.Random(0)

    gold = [GoldItem(f"i{k}", f"text {k}", rng.choice(LABELS), (f"t{k % 10}",)) for k in range(n)]
    answers = {item.id: item.expected if rng.random() < 0.8 else rng.choice(LABELS) for item in gold}
    numeric = [GoldItem(f"i{k}", f"q {k}", float(k % 50), (f"t{k % 10}",)) for k in range(n)]
    numeric_answers = {item.id: item.expected + rng.gauss(0, 2) for item in numeric}
    texts = {
        key: f'```json\n{{"topic": "{value}", "score": {rng.randint(0, 6)}}}\n```' for key, value in answers.items()
    }
    checks = load_checks(
        {
            "checks": [
                {"type": "valid_json"},
                {"type": "json_schema", "json_schema": {"type": "object", "required": ["topic"]}},
                {"type": "label_in_set", "field": "topic", "labels": LABELS},
                {"type": "regex", "pattern": "as an ai", "must_match": False, "ignore_case": True},
                {"type": "length", "max_chars": 200},
                {"type": "numeric_range", "field": "score", "min": 1, "max": 5},
            ]
        }
    )
    judge = JudgeConfig(rubric="r", pass_score=3)
    judge_texts = [
        f'Verdict below.\n```json\n{{"score": "{rng.randint(1, 5)}/5", "verdict": "{rng.choice(["PASS", "fail"])}", '
        f'"reason": "because"}}\n```'
        for _ in range(n)
    ]
    judgements = [
        parse_judgement(judge_texts[(k * 3 + r) % n], judge, item_id=f"i{k}", repeat=r)
        for k in range(n)
        for r in range(3)
    ]
    ratings = [[rng.choice(LABELS) if rng.random() > 0.1 else None for _ in range(n)] for _ in range(5)]

    figures: list[tuple[str, float, str, bool]] = []
    t = best_of(args.repeats, lambda: evaluate_answers(gold, answers))
    figures.append(("gold evaluation", t, f"{t:.3f} s (target < 1 s)", t < 1.0))
    t = best_of(args.repeats, lambda: evaluate_answers(numeric, numeric_answers))
    figures.append(("gold MAE", t, f"{t:.3f} s (target < 5 s)", t < 5.0))
    t = best_of(args.repeats, lambda: run_checks(texts, checks))
    rate = n * len(checks.checks) / t
    figures.append(("hard checks", t, f"{rate:,.0f} results/s (target >= 20,000)", rate >= 20_000))
    t = best_of(args.repeats, lambda: [parse_judgement(text, judge, item_id="x") for text in judge_texts])
    rate = n / t
    figures.append(("judge parsing", t, f"{rate:,.0f} answers/s (target >= 10,000)", rate >= 10_000))
    t = best_of(args.repeats, lambda: (votes_by_item(judgements), find_flaky(judgements)))
    rate = len(judgements) / t
    figures.append(("votes + flaky", t, f"{rate:,.0f} judgements/s (target >= 30,000)", rate >= 30_000))
    t = best_of(args.repeats, lambda: krippendorff_alpha(ratings))
    figures.append(("krippendorff", t, f"{t:.3f} s (target < 1 s)", t < 1.0))

    print(f"evaluation loop on {n:,} items (best of {args.repeats})")
    for name, _, text, ok in figures:
        print(f"  {name:<16} {text}{'' if ok else '   MISSED'}")
    return 0 if all(ok for *_, ok in figures) else 1


if __name__ == "__main__":
    raise SystemExit(main())
