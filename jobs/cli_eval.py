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


def run(args: argparse.Namespace) -> int | None:
    """Run the command in `args` if it is one of this module's; None when it is not."""
    if args.command == "prompt":
        return prompt_check(args.experiments or None, args.experiments_dir, args.changelog_dir)
    if args.command == "trace":
        return trace_call(args.call, args.experiment)
    return None


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
