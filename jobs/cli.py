"""The `assay` command: run, resume, status, ui, compare.

`assay run` executes the experiment's Dagster jobs in this process on the instance under DAGSTER_HOME
(the embedded SQLite one by default): the plan job (snapshot + call plan), then the call partitions in
batched range runs, then the analysis job (extractions, evaluation, report). The analysis always runs, so
a failed call is a missing row in the report and `assay resume` fills it in later.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from pipeline.config import REPO_ROOT
from pipeline.llm.errors import AssayError


def _environment_defaults() -> None:
    # litellm fetches a price map over the network at import unless told not to; Assay keeps prices in
    # configs/models.yaml, and a hub lookup must never happen at run time.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (what was wrong and where to look), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `assay`."""
    parser = _OneLineParser(prog="assay", description="Reproducible, resumable, budgeted LLM experiments.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run an experiment end to end (stored calls are never sent again)")
    run.add_argument("experiment")
    run.add_argument("--model", action="append", help="model alias (repeat for several); default: the file's")
    run.add_argument("--input", help="CSV/JSONL file of items instead of the experiment's dataset")
    run.add_argument("--limit", type=_positive_int, help="first N items only")
    run.add_argument("--single-item", "--single-product", dest="single_item", help="classify one text only")
    run.add_argument("--batch-size", type=_positive_int, help="items per prompt (answers are matched back per item)")
    run.add_argument(
        "--calls-per-run", type=_positive_int, help="call partitions per Dagster run (default: the file's)"
    )
    run.add_argument("--max-cost", type=float, help="budget in USD: stop before the call that would exceed it")
    run.add_argument("--config", help="experiment YAML file to use instead of configs/experiments/<name>.yaml")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any config field")

    resume = sub.add_parser("resume", help="mark dead runs failed, then run only failed and missing calls")
    resume.add_argument("experiment")
    resume.add_argument("--max-cost", type=float)
    resume.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")

    status = sub.add_parser("status", help="done / failed / missing calls and spend of the current plan")
    status.add_argument("experiment")
    status.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")

    ui = sub.add_parser("ui", help="open the Dagster UI on this workspace")
    ui.add_argument("--port", type=int, default=3000)

    for module in _command_modules():
        module.add_commands(sub)

    compare = sub.add_parser("compare", help="compare two run folders (metric deltas, McNemar, changed answers)")
    compare.add_argument("run_a")
    compare.add_argument("run_b")
    compare.add_argument("--output", help="markdown file to write (default: <run_b>/outputs/compare.md)")
    return parser


def _command_modules() -> list[Any]:
    """Modules adding commands beside run/resume/status/ui/compare: each has add_commands(sub) and run(args)."""
    from jobs import cli_admin, cli_eval, cli_models, cli_serve

    return [cli_admin, cli_eval, cli_models, cli_serve]


def _positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (0 would silently mean 'no limit')."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; give one >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not allowed; give a number >= 1")
    return value


def overrides_from_args(args: argparse.Namespace) -> list[str]:
    """Turn run flags into `--set` overrides: the config is resolved in one place, pipeline.config."""
    flags: list[str] = []
    if getattr(args, "model", None):
        flags.append(f"models=[{','.join(args.model)}]")
    if getattr(args, "input", None):
        path = Path(args.input).resolve()
        loader = "jsonl" if path.suffix == ".jsonl" else "csv"
        flags += [f"dataset.path={path}", f"dataset.loader={loader}", "dataset.items=[]"]
    if getattr(args, "limit", None):
        flags.append(f"dataset.limit={args.limit}")
    if getattr(args, "single_item", None):
        flags.append(f"dataset.single_item={_yaml_scalar(args.single_item)}")
    if getattr(args, "batch_size", None):
        flags.append(f"run.items_per_prompt={args.batch_size}")
    if getattr(args, "calls_per_run", None):
        flags.append(f"run.batch_size={args.calls_per_run}")
    if getattr(args, "max_cost", None) is not None:
        flags.append(f"budget.max_cost_usd={args.max_cost}")
    return flags + list(getattr(args, "set", []) or [])


def _overrides_file(experiment: str) -> Path:
    from pipeline.config import assay_home

    return assay_home() / "work" / Path(experiment).stem / "run_overrides.json"


def save_overrides(experiment: str, overrides: list[str]) -> None:
    """Remember the flags of `assay run` so `assay resume` continues the same run."""
    import json

    path = _overrides_file(experiment)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(overrides))


def saved_overrides(experiment: str) -> list[str]:
    """Flags of the last `assay run` of `experiment` ([] if none)."""
    import json

    path = _overrides_file(experiment)
    return list(json.loads(path.read_text())) if path.exists() else []


def _yaml_scalar(text: str) -> str:
    import json

    return json.dumps(text)  # JSON strings are YAML scalars, so quotes and colons survive parsing


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `assay` command."""
    _environment_defaults()
    before = os.environ.get("ASSAY_EXPERIMENT_FILES")
    try:
        return _main(argv)
    finally:  # --config sets it for this command only (main may be called again in the same process)
        if before is None:
            os.environ.pop("ASSAY_EXPERIMENT_FILES", None)
        else:
            os.environ["ASSAY_EXPERIMENT_FILES"] = before


def _main(argv: Sequence[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a bad flag already reported in one line
        return exc.code if isinstance(exc.code, int) else 2
    try:
        if args.command == "ui":
            return _ui(args.port)
        for module in _command_modules():
            code = module.run(args)
            if code is not None:
                return int(code)
        if args.command == "compare":
            from pipeline.report.compare import compare_runs_cli

            return compare_runs_cli(Path(args.run_a), Path(args.run_b), Path(args.output) if args.output else None)
        experiment = args.experiment
        overrides = overrides_from_args(args)
        if getattr(args, "config", None):
            experiment = _experiment_file(args.config)
        _install_signal_handlers()
        if args.command in ("resume", "status"):
            # Resume what was run: the last `assay run` flags first, then any given now (they win).
            overrides = [*saved_overrides(experiment), *overrides]
        warm = _prewarm_call_worker(experiment, overrides, resuming=args.command == "resume")
        try:
            from jobs.launcher import ExperimentLauncher  # Dagster's import takes seconds: the worker starts first

            launcher = ExperimentLauncher(experiment, overrides, warm_worker=warm)
            if args.command == "run":
                save_overrides(experiment, overrides)
                return launcher.run()
            if args.command == "resume":
                return launcher.resume()
            if args.command == "status":
                return launcher.print_status()
        finally:
            if warm is not None:
                warm.discard()  # started for a large run that turned out not to need it
    except AssayError as exc:
        print(f"assay: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\nassay: interrupted; stored responses are kept. Resume with: assay resume <experiment>", file=sys.stderr
        )
        return 130
    except Exception as exc:  # noqa: BLE001 - not one of ours: one line here, the traceback in a log file
        log = _log_traceback(exc)
        print(f"assay: internal error: {type(exc).__name__}: {exc}; traceback in {log}", file=sys.stderr)
        return 3
    return 0


def _log_traceback(exc: BaseException) -> Path:
    """Write the traceback of an unexpected error (secrets scrubbed) to a log file under the Assay home."""
    import traceback
    from datetime import UTC, datetime

    from pipeline.config import assay_home
    from pipeline.store import scrub_secrets

    folder = assay_home() / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"assay-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    text = "".join(traceback.format_exception(exc))
    path.write_text(scrub_secrets(f"assay {' '.join(sys.argv[1:])}\n{text}"), encoding="utf-8")
    return path


def _experiment_file(path_text: str) -> str:
    """A --config file as the experiment source; the code location loads it too (ASSAY_EXPERIMENT_FILES)."""
    from pipeline.llm.errors import ConfigError

    path = Path(path_text).resolve()
    if not path.is_file() or path.suffix not in (".yaml", ".yml"):
        raise ConfigError(f"--config {path_text}: expected an existing .yaml experiment file")
    # Read by definitions.py when Dagster loads the code location in this process: the file's experiment
    # replaces a shipped one of the same name instead of being ignored.
    os.environ["ASSAY_EXPERIMENT_FILES"] = str(path)
    return str(path)


def _prewarm_call_worker(experiment: str, overrides: list[str], *, resuming: bool) -> Any:
    """Start the call worker of a large run now: its ~4 s of imports overlap with Dagster's and planning."""
    from pipeline.call_stages import expected_calls
    from pipeline.context import ExperimentContext
    from pipeline.worker import PROCESS_THRESHOLD, WarmWorker, worker_enabled

    if not worker_enabled():
        return None
    try:
        expected = expected_calls(ExperimentContext(experiment, overrides), resuming=resuming)
    except AssayError:
        return None  # the launcher reports the problem in its own words
    return WarmWorker() if expected >= PROCESS_THRESHOLD else None


def _ui(port: int) -> int:
    from jobs.instance import ensure_dagster_home

    ensure_dagster_home()
    # The interpreter running `assay` has dagster installed; a bare `dagster` may not be on PATH.
    command = [sys.executable, "-m", "dagster", "dev", "-w", str(REPO_ROOT / "workspace.yaml"), "-p", str(port)]
    print(f"Dagster UI on http://127.0.0.1:{port} (DAGSTER_HOME={os.environ['DAGSTER_HOME']})")
    return subprocess.call(command, cwd=REPO_ROOT)


def _install_signal_handlers() -> Any:
    # SIGTERM behaves like Ctrl-C: no new calls, calls in flight finish and are stored, resume is printed.
    return signal.signal(signal.SIGTERM, signal.default_int_handler)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
