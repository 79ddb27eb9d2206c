"""The evaluation loop's commands: `assay prompt check`, `assay trace`, `assay compare-models`.

`jobs/cli.py` adds these sub-commands with `add_commands(subparsers)` and hands the parsed arguments to
`run(args)`, which returns an exit code for a command of this module and None for any other; each command is
a few lines over `pipeline/evaluation/`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pipeline.llm.errors import ConfigError

COMMANDS = ("prompt", "trace", "compare-models")


def add_commands(subparsers: Any) -> None:
    """Add `prompt check`, `trace` and `compare-models` to the `assay` parser's sub-commands."""
    prompt = subparsers.add_parser("prompt", help="prompt versions: `assay prompt check` (the changelog gate)")
    prompt_sub = prompt.add_subparsers(dest="prompt_command", required=True)
    check = prompt_sub.add_parser(
        "check", help="fail when a prompt changed without a changelog entry or a gold-set run (CI runs it)"
    )
    check.add_argument("experiments", nargs="*", help="experiment names (default: every experiment)")
    check.add_argument("--experiments-dir", type=Path, help="experiment files (default: configs/experiments)")
    check.add_argument("--changelog-dir", type=Path, help="changelog files (default: configs/prompt_changelog)")

    trace = subparsers.add_parser("trace", help="print one call's stored record and every attempt")
    trace.add_argument("call", help="a call id (or 8+ characters of one) or a partition key (h1.fake.r0.0123abcd)")
    trace.add_argument("--experiment", help="look only in this experiment's plans (default: every experiment's)")

    compare = subparsers.add_parser(
        "compare-models", help="run the gold set on each model; accuracy, cost, latency, paired tests, the pick"
    )
    compare.add_argument("experiment")
    compare.add_argument("--models", required=True, type=_aliases, help="comma-separated model aliases (2 or more)")
    compare.add_argument(
        "--margin", type=float, default=0.02, help="accuracy points (0.02 = 2) a cheaper model may lose (default 0.02)"
    )
    compare.add_argument("--max-cost", type=float, help="budget in USD of each model's run")
    compare.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any config field")


def run(args: argparse.Namespace) -> int | None:
    """Run the command in `args` if it is one of this module's; None when it is not."""
    if args.command == "prompt":
        return prompt_check(args.experiments or None, args.experiments_dir, args.changelog_dir)
    if args.command == "trace":
        return trace_call(args.call, args.experiment)
    if args.command == "compare-models":
        overrides = list(args.set) + ([f"budget.max_cost_usd={args.max_cost}"] if args.max_cost is not None else [])
        return compare_models_cli(args.experiment, args.models, args.margin, overrides)
    return None


def _aliases(text: str) -> list[str]:
    """argparse type: 'a,b,c' -> ['a', 'b', 'c'] (at least two distinct aliases)."""
    aliases = list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if len(aliases) < 2:
        raise argparse.ArgumentTypeError(f"{text!r}: give at least two model aliases, e.g. --models gpt4o_mini,haiku")
    return aliases


def compare_models_cli(experiment: str, models: list[str], margin: float, overrides: list[str]) -> int:
    """Run the gold set once per model (the launcher, `--set models=[x]`), then print the comparison.

    Exit code: 0, or the worst exit code of the runs (1: some calls missing, counted as wrong answers).
    """
    from jobs.launcher import ExperimentLauncher
    from pipeline.context import ExperimentContext
    from pipeline.data.snapshot import read_snapshot
    from pipeline.evaluation.compare_models import compare_models, render_comparison_markdown
    from pipeline.evaluation.model_runs import gold_input, item_outcomes
    from pipeline.records import AnswerSet
    from pipeline.stages import load_record

    if not 0.0 <= margin <= 1.0:
        raise ConfigError(f"--margin {margin}: expected accuracy points between 0 and 1 (0.02 = 2 points)")
    context = ExperimentContext(experiment, overrides)
    gold_in = gold_input(context.config, context.work_dir)
    print(f"assay: compare-models {context.config.name} on {gold_in.source}: {', '.join(models)}", flush=True)
    results = {}
    worst = 0
    for model in models:
        launcher = ExperimentLauncher(experiment, [*overrides, *gold_in.overrides, f"models=[{model}]"])
        code = launcher.run()
        if code not in (0, 1):
            print(f"assay: compare-models: the run on {model} ended with exit code {code}", file=sys.stderr)
            return code
        worst = max(worst, code)
        answers = load_record(launcher.context.record_path("answers"), AnswerSet).record
        gold = gold_in.gold
        if gold is None:
            snapshot = read_snapshot(launcher.context.snapshot_dir)
            gold = {item.item_id: item.gold for item in snapshot if item.gold is not None}
        if not gold:
            raise ConfigError(
                f"{context.config.name} has no gold set (datasets/{context.config.name}/gold.jsonl) and no item with a "
                "gold label (dataset.gold_field); add one to compare models"
            )
        results[model] = item_outcomes(answers.rows, gold, launcher.context.store)
    comparison = compare_models(results, margin)
    print()
    print(render_comparison_markdown(comparison))
    print(f"assay: cheapest model within {margin:.1%} of the best ({comparison.best}): {comparison.recommended}")
    return worst


def trace_call(query: str, experiment: str | None) -> int:
    """Print the call's record and attempts; 1 when it has no stored answer, else 0."""
    from pipeline.config import assay_home
    from pipeline.trace import find_call, render_trace

    traced = find_call(assay_home(), query, experiment)
    print(render_trace(traced))
    return 0 if traced.record is not None else 1


def prompt_check(
    experiments: list[str] | None, experiments_dir: Path | None = None, changelog_dir: Path | None = None
) -> int:
    """Print one line per problem of the prompt-changelog gate; 1 when there is any, else 0."""
    from pipeline.evaluation.prompt_versions import check_prompt_versions

    problems = check_prompt_versions(experiments, experiments_dir=experiments_dir, changelog_dir=changelog_dir)
    for problem in problems:
        print(f"assay: prompt check: {problem}", file=sys.stderr)
    if problems:
        return 1
    print("assay: prompt check: every prompt version has a changelog entry and a gold-set run")
    return 0
