"""The report stage: final_report.md/.html, results files and a self-contained lab-notebook run folder.

runs/<experiment>-<YYYY-MM-DD-HHMMSS>/
    inputs/    what went in (items, prompt templates, experiment-specific inputs such as a taxonomy)
    config/    models.yaml as resolved, run_config.json, system_info.json
    outputs/   results CSV/JSONL, token_usage.json, timing.json, errors.log, stats_summary.json, reports, plots
    metadata/  run_summary.json (status, counts, cost, git commit, Dagster run id)

Nothing here contains a key: configs are written from the typed objects (which hold only the *names* of
key variables) and every text file passes through scrub_secrets.
"""

from __future__ import annotations

import csv
import html
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pipeline.config import REPO_ROOT, ExperimentConfig, ModelZoo
from pipeline.data.loaders import Item
from pipeline.provenance import git_commit, system_info
from pipeline.report import readable
from pipeline.report.resources import ResourceUse, measure
from pipeline.store import StoredResponse, scrub_secrets

if TYPE_CHECKING:
    from pipeline.experiments.base import ReportHooks


@dataclass(frozen=True)
class WrittenReport:
    """Paths of what the report stage wrote."""

    run_folder: Path
    report_md: Path
    report_html: Path
    results_csv: Path
    status: str = "complete"


def runs_dir() -> Path:
    """$ASSAY_RUNS_DIR, else `runs/` in the repository."""
    return Path(os.environ.get("ASSAY_RUNS_DIR") or REPO_ROOT / "runs")


def new_run_folder(experiment: str, now: datetime | None = None) -> Path:
    """A fresh `runs/<experiment>-<YYYY-MM-DD-HHMMSS>` folder (suffixed if that second is taken)."""
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%d-%H%M%S")
    base = runs_dir() / f"{experiment}-{stamp}"
    folder, n = base, 1
    while folder.exists():
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    for sub in ("inputs", "config", "outputs", "metadata"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    return folder


def write_json(path: Path, value: Any) -> None:
    """JSON with secrets scrubbed."""
    path.write_text(
        scrub_secrets(json.dumps(value, indent=2, ensure_ascii=False, default=str)) + "\n", encoding="utf-8"
    )


@dataclass(frozen=True)
class ReportInputs:
    """Everything the report stage writes from: records of the run's stages, no live objects to call back."""

    config: ExperimentConfig
    zoo: ModelZoo
    aliases: list[str]
    overrides: list[str]
    hooks: ReportHooks
    prompt_version: str
    prompt_templates: dict[str, str]
    items: list[Item]
    rows: list[dict[str, Any]]
    evaluation: dict[str, Any]
    planned_call_ids: list[str]
    plan_id: str
    records: dict[str, StoredResponse | None]
    load_errors_path: Path
    latest_pointer: Path
    extra_sections: list[str] = field(default_factory=list)
    lead_sections: Callable[[Path], list[str]] | None = None
    """Markdown placed first, right under the title (a kind's headline findings), written given the outputs
    folder (where its plots go); None = none."""
    store_root: Path | None = None
    """The response store's folder, whose size the run summary reports; None = not measured."""


def write_report(inputs: ReportInputs, *, dagster_run_id: str | None = None) -> WrittenReport:
    """Write the run folder and the reports from the run's records."""
    hooks = inputs.hooks
    items = inputs.items
    items_by_id = {item.item_id: item for item in items}
    rows = inputs.rows
    evaluation = inputs.evaluation
    records = inputs.records  # every call of the run's plans: all were paid for
    done = [record for record in {id(r): r for r in records.values() if r is not None}.values()]
    planned_done = sum(1 for call_id in inputs.planned_call_ids if records.get(call_id) is not None)

    folder = new_run_folder(inputs.config.name)
    inputs_dir, config_dir, outputs, meta = (folder / name for name in ("inputs", "config", "outputs", "metadata"))

    hooks.write_inputs(items, inputs_dir)
    prompts = inputs.config.prompts
    # user_batch and item_line too: with items_per_prompt > 1 they, not `user`, make the prompts.
    write_json(
        inputs_dir / "prompt_templates.json",
        {**inputs.prompt_templates, "user_batch": prompts.user_batch, "item_line": prompts.item_line},
    )

    models_used = {alias: inputs.zoo.get(alias).model_dump(mode="json") for alias in inputs.aliases}
    (config_dir / "models.yaml").write_text(scrub_secrets(yaml.safe_dump({"models": models_used}, sort_keys=False)))
    write_json(
        config_dir / "run_config.json",
        {"experiment": inputs.config.model_dump(mode="json"), "overrides": inputs.overrides, "models": inputs.aliases},
    )
    write_json(config_dir / "system_info.json", system_info())

    results_csv = outputs / hooks.results_filename
    result_rows = [hooks.result_row(row, items_by_id.get(row["item_id"])) for row in rows]
    with results_csv.open("w", newline="", encoding="utf-8") as handle:
        columns = list(result_rows[0]) if result_rows else ["item_id"]
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(result_rows)
    # Scrubbed as one text: the scrubber scans the environment once per call, not once per row.
    lines = "".join(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows)
    (outputs / "results.jsonl").write_text(scrub_secrets(lines), encoding="utf-8")

    usage = {
        "calls": len(done),
        "prompt_tokens": sum(r.usage.get("prompt_tokens", 0) for r in done),
        "completion_tokens": sum(r.usage.get("completion_tokens", 0) for r in done),
        "cost_usd": sum(r.cost_usd for r in done),
        "by_model": _by_model(done),
    }
    write_json(outputs / "token_usage.json", usage)
    latencies = sorted(r.latency_s for r in done)
    timing = {
        "calls": len(done),
        "first_call_started": min((r.started_at for r in done), default=None),
        "last_call_finished": max((r.finished_at for r in done), default=None),
        "latency_s": _percentiles(latencies),
        "attempts_total": sum(r.attempts for r in done),
    }
    write_json(outputs / "timing.json", timing)
    errors = [row for row in rows if row["status"] != "ok"]
    (outputs / "errors.log").write_text(
        scrub_secrets(
            "".join(f"{row['status']}\t{row['item_id']}\t{row['alias']}\t{row['reason']}\n" for row in errors)
        )
        + _load_errors(inputs.load_errors_path)
    )
    write_json(outputs / "stats_summary.json", evaluation)
    sections = hooks.report_sections(evaluation, rows, items, outputs) + inputs.extra_sections
    lead = inputs.lead_sections(outputs) if inputs.lead_sections is not None else []
    # Measured before the report is written (the report's own few KB are not counted).
    resources = measure(folder, inputs.store_root)
    markdown = render_markdown(inputs, evaluation, usage, timing, len(errors), sections, lead, resources)
    report_md = outputs / "final_report.md"
    report_md.write_text(scrub_secrets(markdown), encoding="utf-8")
    report_html = outputs / "final_report.html"
    report_html.write_text(scrub_secrets(markdown_to_html(markdown, inputs.config.name)), encoding="utf-8")

    all_planned = planned_done == len(inputs.planned_call_ids)
    status = "complete" if all_planned and not any(r["status"] == "missing" for r in rows) else "partial"
    write_json(
        meta / "run_summary.json",
        {
            "experiment": inputs.config.name,
            "status": status,
            "created_at": datetime.now(UTC).isoformat(),
            "plan_id": inputs.plan_id,
            "counts": {
                "items": len(items),
                "calls_planned": len(inputs.planned_call_ids),
                "calls_done": planned_done,
                "repair_calls": len(done) - planned_done,
                "answers_valid": sum(r["status"] == "ok" for r in rows),
                "answers_invalid": sum(r["status"] == "invalid" for r in rows),
                "answers_missing": sum(r["status"] == "missing" for r in rows),
            },
            "cost_usd": usage["cost_usd"],
            "resources": resources.to_json(),
            "models": inputs.aliases,
            "prompt_version": inputs.prompt_version,
            "git_commit": git_commit(),
            "dagster_run_id": dagster_run_id,
        },
    )
    inputs.latest_pointer.parent.mkdir(parents=True, exist_ok=True)
    inputs.latest_pointer.write_text(str(folder))
    return WrittenReport(folder, report_md, report_html, results_csv, status)


def _by_model(records: list[Any]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for record in records:
        entry = out.setdefault(
            record.alias_used, {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0}
        )
        entry["calls"] += 1
        entry["prompt_tokens"] += record.usage.get("prompt_tokens", 0)
        entry["completion_tokens"] += record.usage.get("completion_tokens", 0)
        entry["cost_usd"] += record.cost_usd
    return out


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "max": None}
    return {
        "p50": values[len(values) // 2],
        "p95": values[min(len(values) - 1, int(len(values) * 0.95))],
        "max": values[-1],
    }


def _load_errors(path: Path) -> str:
    if not path.exists():
        return ""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        error = json.loads(line)
        lines.append(f"input\trow {error['row_number']}\t{error['reason']}\t{error.get('raw', '')}\n")
    return "".join(lines)


def render_markdown(
    inputs: ReportInputs,
    evaluation: dict[str, Any],
    usage: dict[str, Any],
    timing: dict[str, Any],
    problems: int,
    sections: list[str],
    lead: Sequence[str] = (),
    resources: ResourceUse | None = None,
) -> str:
    """The final report as Markdown (`lead`: sections placed before the run's figures)."""
    lines = [
        f"# {inputs.config.name}: results",
        "",
        inputs.config.description,
        "",
        *lead,
        f"- prompt version: `{inputs.prompt_version}`",
        f"- models: {', '.join(inputs.aliases)}",
        f"- calls: {usage['calls']}, tokens in/out: {usage['prompt_tokens']}/{usage['completion_tokens']}, "
        f"cost: {readable.usd(usage['cost_usd'])}",
        f"- latency p50/p95: {readable.seconds(timing['latency_s']['p50'])}"
        f" / {readable.seconds(timing['latency_s']['p95'])}",
        f"- answers not valid or missing: {problems}",
        *([resources.sentence()] if resources is not None else []),
        "",
        "| model | items | valid | invalid | missing | accuracy | 95% CI | cost (USD) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for alias, metrics in evaluation.get("models", {}).items():
        accuracy = metrics.get("accuracy")
        acc = f"{accuracy['estimate']:.3f}" if accuracy else "n/a"
        ci = f"[{accuracy['low']:.3f}, {accuracy['high']:.3f}]" if accuracy else "n/a"
        lines.append(
            f"| {alias} | {metrics['items']} | {metrics['valid']} | {metrics['invalid']} | {metrics['missing']} "
            f"| {acc} | {ci} | {metrics['cost_usd']:.4f} |"
        )
    lines.append("")
    lines.append("Accuracy counts invalid and missing answers as wrong; intervals are Wilson score intervals.")
    lines.extend(["", *sections])
    return "\n".join(lines) + "\n"


def markdown_to_html(markdown: str, title: str) -> str:
    """A small, dependency-free Markdown subset (headings, lists, tables, images) to HTML."""
    out = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:960px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px}</style></head><body>",
    ]
    in_table = False
    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            if all(set(cell) <= {"-", ":"} for cell in cells):
                continue
            if not in_table:
                out.append("<table>")
                in_table = True
                out.append("<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cells) + "</tr>")
            else:
                out.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
            continue
        if in_table:
            out.append("</table>")
            in_table = False
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.startswith("- "):
            out.append(f"<li>{html.escape(line[2:])}</li>")
        elif line.startswith("!["):
            alt, _, src = line[2:].partition("](")
            out.append(f"<img alt='{html.escape(alt)}' src='{html.escape(src.rstrip(')'))}' style='max-width:100%'>")
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    if in_table:
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out)
