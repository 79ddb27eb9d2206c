"""The files the original risk-fairness system wrote, beside the standard run folder's (in outputs/).

- experiment_config.yaml: the experiment as resolved (overrides applied), the overrides, the models used.
- experiment_metadata.json: git commit, system, package versions (pipeline.provenance), prompt version,
  models with their version pins, profile sampling settings, the Dagster run id.
- experiment.log: structured JSON lines (ts, level, event, fields), rebuilt from the run's records: the
  profiles generated, every call (latency, attempts, cost), invalid and repaired answers, the audit, the report.
- experiment_report.json: status, counts, cost, accuracy per model, the verdicts, and where every file is.

results.jsonl, results.csv and stats_summary.json are written by the standard report (pipeline.report.runs).
Every file passes through scrub_secrets, like the rest of the run folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pipeline.provenance import git_commit, package_versions, system_info
from pipeline.report.runs import ReportInputs, WrittenReport, write_json
from pipeline.store import scrub_secrets

if TYPE_CHECKING:
    from pipeline.data.profiles import ProfileSampleConfig
    from pipeline.experiments.risk_fairness import FairnessStats

__all__ = ["ExperimentFiles", "experiment_log_events", "write_experiment_files"]

LOG_FORMAT_VERSION = 1
"""Version of the experiment.log line shape (every line carries it)."""


@dataclass(frozen=True)
class ExperimentFiles:
    """Paths of the files written here."""

    config_yaml: Path
    metadata_json: Path
    log: Path
    report_json: Path


def write_experiment_files(
    inputs: ReportInputs,
    written: WrittenReport,
    fairness: FairnessStats,
    sample: ProfileSampleConfig,
    *,
    dagster_run_id: str | None = None,
) -> ExperimentFiles:
    """Write the four files into the run folder's outputs/ (after the standard report, whose summary they read)."""
    outputs = written.run_folder / "outputs"
    now = datetime.now(UTC).isoformat()
    models = {alias: inputs.zoo.get(alias).model_dump(mode="json") for alias in inputs.aliases}

    config_yaml = outputs / "experiment_config.yaml"
    config_doc = {
        "experiment": inputs.config.model_dump(mode="json"),
        "overrides": list(inputs.overrides),
        "models": models,
    }
    config_yaml.write_text(scrub_secrets(yaml.safe_dump(config_doc, sort_keys=False, allow_unicode=True)))

    metadata_json = outputs / "experiment_metadata.json"
    write_json(
        metadata_json,
        {
            "experiment": inputs.config.name,
            "created_at": now,
            "git_commit": git_commit(),
            "system": system_info(),
            "package_versions": package_versions(),
            "prompt_version": inputs.prompt_version,
            "models": {alias: {"model": m["model"], "version": m["version"]} for alias, m in models.items()},
            "profiles": sample.model_dump(mode="json"),
            "plan_id": inputs.plan_id,
            "dagster_run_id": dagster_run_id,
            "run_folder": str(written.run_folder),
        },
    )

    log = outputs / "experiment.log"
    events = experiment_log_events(inputs, fairness, sample, written, now)
    log.write_text(scrub_secrets("".join(json.dumps(e, ensure_ascii=False, default=str) + "\n" for e in events)))

    summary = json.loads((written.run_folder / "metadata" / "run_summary.json").read_text(encoding="utf-8"))
    report_json = outputs / "experiment_report.json"
    files = [
        "final_report.md",
        "final_report.html",
        written.results_csv.name,
        "results.jsonl",
        "stats_summary.json",
        config_yaml.name,
        metadata_json.name,
        log.name,
        report_json.name,
    ]
    write_json(
        report_json,
        {
            "experiment": inputs.config.name,
            "created_at": now,
            "status": summary["status"],
            "counts": summary["counts"],
            "cost_usd": summary["cost_usd"],
            "prompt_version": inputs.prompt_version,
            "models": inputs.aliases,
            "accuracy": {
                alias: metrics.get("accuracy") for alias, metrics in inputs.evaluation.get("models", {}).items()
            },
            "verdicts": {
                model.alias: [
                    {"attribute": v.attribute, "significant": v.significant, "sentence": v.sentence}
                    for v in model.audit.verdicts
                ]
                for model in fairness.models
                if model.audit is not None
            },
            "run_folder": str(written.run_folder),
            "files": {name: f"outputs/{name}" for name in files},
        },
    )
    return ExperimentFiles(config_yaml, metadata_json, log, report_json)


def _event(ts: str, event: str, level: str = "INFO", **fields: Any) -> dict[str, Any]:
    return {"ts": ts, "level": level, "event": event, "v": LOG_FORMAT_VERSION, **fields}


def experiment_log_events(
    inputs: ReportInputs, fairness: FairnessStats, sample: ProfileSampleConfig, written: WrittenReport, now: str
) -> list[dict[str, Any]]:
    """The run as structured events, in time order (events without a time of their own get the report's)."""
    records = {id(r): r for r in inputs.records.values() if r is not None}.values()
    first = min((r.started_at for r in records), default=now)
    events = [
        _event(
            first,
            "profiles_generated",
            variants=len(inputs.items),
            profiles=sample.n_profiles,
            design=sample.design,
            vary=list(sample.vary),
            seed=sample.seed,
        )
    ]
    for record in records:
        request = record.request
        events.append(
            _event(
                record.finished_at,
                "call_finished",
                "WARNING" if record.attempts > 1 else "INFO",
                call_id=record.call_id,
                item_id=request.get("item_id"),
                purpose=request.get("purpose"),
                alias=record.alias_used,
                model=record.model_used,
                latency_s=record.latency_s,
                attempts=record.attempts,
                prompt_tokens=record.usage.get("prompt_tokens", 0),
                completion_tokens=record.usage.get("completion_tokens", 0),
                cost_usd=record.cost_usd,
            )
        )
    for call_id in inputs.planned_call_ids:
        if inputs.records.get(call_id) is None:
            events.append(_event(now, "call_missing", "WARNING", call_id=call_id))
    for row in inputs.rows:
        if row["status"] == "invalid":
            fields = {"item_id": row["item_id"], "alias": row["alias"], "reason": row["reason"]}
            events.append(_event(now, "answer_invalid", "WARNING", **fields))
        elif row.get("repaired"):
            events.append(_event(now, "answer_repaired", item_id=row["item_id"], alias=row["alias"]))
    for model in fairness.models:
        if model.audit is None:
            events.append(_event(now, "audit_skipped", "WARNING", alias=model.alias, reason="no answers"))
            continue
        findings = [v for v in model.audit.verdicts if v.significant]
        events.append(
            _event(
                now,
                "audit",
                "WARNING" if findings else "INFO",
                alias=model.alias,
                rows=model.audit.n_rows,
                missing=model.missing,
                tests=len(model.audit.tests),
                findings=len(findings),
                verdicts=[v.sentence for v in model.audit.verdicts],
            )
        )
    events.append(_event(now, "report_written", run_folder=str(written.run_folder), status=written.status))
    events.sort(key=lambda e: e["ts"])  # ISO-8601 UTC strings of one format sort as times
    return events
