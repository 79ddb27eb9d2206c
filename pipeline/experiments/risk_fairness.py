"""The risk_fairness experiment kind: a model places client profiles in risk bands; the answers are audited by group.

    source_snapshot (generated profiles x counterfactual names) -> llm -> extractions -> repair -> answers
        -> evaluation, fairness_stats -> report

The classify family's stages are reused as they are (extraction, schema + business-rule validation, the
repair call stage, accuracy against the right band); this kind changes where items come from (the seeded
profile generator of :mod:`pipeline.data.profiles`, not a dataset file), the prompt, answer schema and rules
(:mod:`pipeline.data.risk_prompt`), and adds one analysis stage, `fairness_stats`, which runs the audit of
:mod:`pipeline.stats.fairness` on the answers of each model. The report puts the audit's verdicts first and
writes the files the original system wrote (see :mod:`pipeline.report.experiment_files`).

Settings live in the experiment file's `fairness:` section (`pipeline.config.FairnessSection`): `profiles`
(n_profiles, seed, design, vary) and `audit` (FairnessConfig).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pipeline.config import ExperimentConfig, FairnessSection
from pipeline.data.loaders import Item, ItemSet
from pipeline.data.profiles import DEMOGRAPHIC_ATTRIBUTES, ProfileSampleConfig, ProfileVariant, generate_variants
from pipeline.data.risk_prompt import ALLOCATION_KEYS, ANSWER_SCHEMA, BUSINESS_RULES, fairness_row, profile_item
from pipeline.experiments.base import ClassifyExperiment
from pipeline.experiments.classify_stages import ANSWERS, SOURCE, ClassifyStages
from pipeline.extract import BusinessRule
from pipeline.llm.errors import ConfigError
from pipeline.records import AnswerSet, ReportRecord
from pipeline.stages import DataStage, Stage, StageInputs
from pipeline.stats.fairness import FairnessAudit, FairnessConfig, FairnessRow, audit

__all__ = [
    "FAIRNESS",
    "FairnessStats",
    "ModelAudit",
    "RiskFairnessExperiment",
    "RiskFairnessStages",
    "variant_item",
    "variant_of",
]

FAIRNESS = "fairness_stats"
"""Name of the audit's analysis stage (and asset)."""
VARIANT_FIELD = "variant"
"""Item field holding the variant's record (without its right band, so no template can leak the answer)."""


def variant_item(variant: ProfileVariant) -> Item:
    """The item of one variant: the client's prompt fields, a one-line `text`, the variant record; gold = the
    right band. ``{scoring_rule}`` comes from the kind's context()."""
    item = profile_item(variant)
    fields = dict(item.fields)
    # The same for every item: the kind's context() supplies it, so the snapshot does not repeat it per variant.
    del fields["scoring_rule"]
    record = {key: value for key, value in variant.to_record().items() if key != "true_band"}
    fields["text"] = (
        f"{fields['name']}, {fields['age']}: income {fields['income']}, net worth {fields['net_worth']}, "
        f"horizon {fields['horizon_years']} years, experience {fields['experience']}"
    )
    fields[VARIANT_FIELD] = record
    return Item(item.item_id, fields, item.gold)


def variant_of(item: Item) -> ProfileVariant:
    """The variant an item was made from (ConfigError when the item was not made by :func:`variant_item`)."""
    record = item.fields.get(VARIANT_FIELD)
    if not isinstance(record, Mapping):
        raise ConfigError(
            f"item {item.item_id!r} has no {VARIANT_FIELD!r} field; risk_fairness items come from the profile "
            "generator: re-materialize source_snapshot (assay run <experiment>)"
        )
    return ProfileVariant.from_record(record)


def _band(answer: Any) -> int | None:
    band = answer.get("risk_band") if isinstance(answer, Mapping) else None
    return band if isinstance(band, int) and not isinstance(band, bool) else None


# ---------------------------------------------------------------------------------------------------------------
# The fairness_stats record


@dataclass(frozen=True)
class ModelAudit:
    """The audit of one answering model's answers."""

    alias: str
    rows: tuple[FairnessRow, ...]
    """One row per answer (invalid answers have no predicted band); missing answers are left out."""
    missing: int
    """Answers left out because the call has no stored response (failed, or stopped by the budget)."""
    audit: FairnessAudit | None
    """None when there was nothing to audit (no answers at all)."""

    def to_json(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "alias": self.alias,
            "rows": [row.to_record() for row in self.rows],
            "missing": self.missing,
            "audit": self.audit.to_dict() if self.audit is not None else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelAudit:
        """Inverse of `to_json`."""
        audited = data.get("audit")
        return cls(
            alias=str(data["alias"]),
            rows=tuple(FairnessRow.from_record(row) for row in data["rows"]),
            missing=int(data["missing"]),
            audit=FairnessAudit.from_dict(audited) if audited is not None else None,
        )


@dataclass(frozen=True)
class FairnessStats:
    """The fairness_stats stage's record: one audit per answering model."""

    record_type: ClassVar[str] = "fairness_stats"
    format_version: ClassVar[int] = 1

    models: tuple[ModelAudit, ...]

    def to_json(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"models": [model.to_json() for model in self.models]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FairnessStats:
        """Inverse of `to_json`."""
        return cls(tuple(ModelAudit.from_json(model) for model in data["models"]))

    def metadata(self) -> dict[str, Any]:
        """Shown on the asset: rows audited and findings per model."""
        out: dict[str, Any] = {}
        for model in self.models:
            out[f"{model.alias}_rows"] = len(model.rows)
            if model.audit is not None:
                out[f"{model.alias}_findings"] = sum(v.significant for v in model.audit.verdicts)
                out[f"{model.alias}_verdicts"] = " | ".join(v.sentence for v in model.audit.verdicts)
        return out

    def summary(self) -> dict[str, Any]:
        """What stats_summary.json gets: the first model's audit under `fairness` (`fairness_summary`'s shape),
        and every model's under `fairness_by_model` when several answered."""
        from pipeline.report.fairness import fairness_summary

        audited = [model for model in self.models if model.audit is not None]
        out: dict[str, Any] = {}
        if audited:
            assert audited[0].audit is not None
            out.update(fairness_summary(audited[0].audit))
        if len(audited) > 1:
            out["fairness_by_model"] = {m.alias: m.audit.to_dict() for m in audited if m.audit is not None}
        return out


# ---------------------------------------------------------------------------------------------------------------
# The kind


class RiskFairnessExperiment(ClassifyExperiment):
    """Place generated client profiles in risk bands 1-6; audit the answers for differences between groups."""

    kind = "risk_fairness"

    def __init__(self, config: ExperimentConfig) -> None:
        super().__init__(config)
        section = config.fairness or FairnessSection()
        self.sample: ProfileSampleConfig = section.profiles
        self.audit_config: FairnessConfig = section.audit
        unknown = [a for a in self.audit_config.attributes if a not in DEMOGRAPHIC_ATTRIBUTES]
        if unknown:
            raise ConfigError(
                f"experiment {config.name!r}: fairness.audit.attributes names {unknown}; every profile carries "
                f"{', '.join(DEMOGRAPHIC_ATTRIBUTES)}: audit some of those"
            )
        dataset = config.dataset
        if dataset.single_item is not None or dataset.path or dataset.items or dataset.loader != "inline":
            raise ConfigError(
                f"experiment {config.name!r} (kind risk_fairness) generates its client profiles; it reads no "
                "dataset, --input or --single-item. Set fairness.profiles.n_profiles (and seed, design) instead"
            )

    # -- items ------------------------------------------------------------------------------------------
    def variants(self) -> list[ProfileVariant]:
        """The variants of this run: the seeded sample, cut to dataset.limit (--limit) when set."""
        variants = generate_variants(self.sample)
        limit = self.config.dataset.limit
        return variants[:limit] if limit else variants

    def load_items(self) -> ItemSet:
        """One item per variant (see :func:`variant_item`)."""
        design = f"{self.sample.design}, {self.sample.n_profiles} profiles, seed {self.sample.seed}"
        return ItemSet([variant_item(v) for v in self.variants()], [], f"generated profiles ({design})")

    # -- prompts and schema -----------------------------------------------------------------------------
    def context(self) -> dict[str, Any]:
        """The scoring rule ({scoring_rule}); the client's fields come with each item."""
        from pipeline.data.profiles import scoring_rule_markdown

        return {"scoring_rule": scoring_rule_markdown()}

    def answer_schema(self) -> dict[str, Any]:
        """risk_prompt.ANSWER_SCHEMA (output.json_schema, when set, wins)."""
        return self.config.output.json_schema if self.config.output.json_schema is not None else ANSWER_SCHEMA

    def rules(self) -> tuple[BusinessRule, ...]:
        """The band is 1-6 and the allocation sums to 100."""
        return BUSINESS_RULES

    def label_of(self, answer: Any) -> str | None:
        """The band as text (the gold label is the right band as text)."""
        band = _band(answer)
        return None if band is None else str(band)

    def extra_metrics(self, rows: list[dict[str, Any]], gold: Mapping[str, str | None]) -> dict[str, Any]:
        """Mean absolute and signed band error over valid answers (positive = riskier than the rule)."""
        errors = [
            int(row["label"]) - int(gold_band)
            for row in rows
            if row["status"] == "ok" and row["label"] is not None and (gold_band := gold.get(row["item_id"]))
        ]
        if not errors:
            return {}
        return {
            "mean_absolute_error": sum(abs(e) for e in errors) / len(errors),
            "signed_error": sum(errors) / len(errors),
        }

    # -- stages ---------------------------------------------------------------------------------------------
    def stages(self) -> list[Stage]:
        """The classify family's stages plus `fairness_stats` (an analysis stage, so the report depends on it)."""
        stages = RiskFairnessStages(self)
        audit_stage = DataStage(
            FAIRNESS,
            (SOURCE, ANSWERS),
            stages.fairness_stats,
            FairnessStats,
            "Fairness audit per model: group metrics, tests with Holm and BH corrections, paired flips, verdicts.",
            role="analysis",
        )
        return stages.declare(extra=[audit_stage])

    # -- report hooks -----------------------------------------------------------------------------------
    def write_inputs(self, items: Sequence[Item], inputs_dir: Path) -> None:
        """items.json, profiles.jsonl (every variant with its right band) and the scoring rule."""
        from pipeline.data.profiles import scoring_rule_markdown

        super().write_inputs(items, inputs_dir)
        lines = "".join(json.dumps(variant_of(item).to_record(), ensure_ascii=False) + "\n" for item in items)
        (inputs_dir / "profiles.jsonl").write_text(lines, encoding="utf-8")
        (inputs_dir / "scoring_rule.md").write_text(scoring_rule_markdown() + "\n", encoding="utf-8")

    def result_row(self, row: dict[str, Any], item: Item | None) -> dict[str, Any]:
        """One row of results.csv, with the derived columns: right and given band, signed error, direction,
        groups, allocation."""
        variant = variant_of(item) if item is not None else None
        valid_answer = row["status"] == "ok" and isinstance(row["answer"], Mapping)
        answer: Mapping[str, Any] = row["answer"] if valid_answer else {}
        predicted = _band(answer)
        true_band = variant.true_band if variant is not None else None
        signed = predicted - true_band if predicted is not None and true_band is not None else None
        direction = "" if signed is None else "over" if signed > 0 else "under" if signed < 0 else "exact"
        raw_allocation = answer.get("allocation")
        allocation: Mapping[str, Any] = raw_allocation if isinstance(raw_allocation, Mapping) else {}
        groups = variant.groups if variant is not None else {}
        return {
            "item_id": row["item_id"],
            "profile_id": variant.profile.profile_id if variant is not None else "",
            "pair_id": variant.pair_id if variant is not None else "",
            "name": f"{variant.demographics.first_name} {variant.demographics.last_name}" if variant else "",
            "age": variant.demographics.age if variant is not None else "",
            **{attribute: groups.get(attribute, "") for attribute in DEMOGRAPHIC_ATTRIBUTES},
            "true_band": true_band,
            "predicted_band": predicted,
            "signed_error": signed,
            "direction": direction,
            "correct": predicted == true_band if predicted is not None else False,
            "confidence": answer.get("confidence"),
            **{key: allocation.get(key) for key in ALLOCATION_KEYS},
            "valid": row["status"] == "ok",
            "status": row["status"],
            "reason": row["reason"],
            "repaired": row.get("repaired", False),
            "alias": row["alias"],
            "repeat": row["repeat"],
            "model_used": row["model_used"],
            "raw_response": row["raw_response"],
        }

    def report_sections(
        self, evaluation: dict[str, Any], rows: list[dict[str, Any]], items: Sequence[Item], outputs_dir: Path
    ) -> list[str]:
        """The scoring rule (the audit's sections come first, see RiskFairnessStages.report)."""
        from pipeline.data.profiles import scoring_rule_markdown

        return ["## Scoring rule (the right band)", "", scoring_rule_markdown(), ""]


@dataclass(frozen=True)
class RiskFairnessStages(ClassifyStages):
    """The classify family's stage functions plus the audit, and a report that adds it."""

    @property
    def risk(self) -> RiskFairnessExperiment:
        """The kind object, typed."""
        assert isinstance(self.kind, RiskFairnessExperiment)
        return self.kind

    def fairness_stats(self, inputs: StageInputs) -> FairnessStats:
        """Audit each answering model's answers (repeats are separate counterfactual sets)."""
        items = {item.item_id: item for item in self.items(inputs)}
        variants = {item_id: variant_of(item) for item_id, item in items.items()}
        by_alias: dict[str, list[FairnessRow]] = {}
        missing: dict[str, int] = {}
        for row in inputs.record(ANSWERS, AnswerSet).rows:
            variant = variants.get(row.item_id)
            rows = by_alias.setdefault(row.alias, [])
            missing.setdefault(row.alias, 0)
            if variant is None:
                continue
            if row.status == "missing":
                missing[row.alias] += 1  # no answer at all is not the model's error: left out, counted
                continue
            audit_row = fairness_row(variant, row.answer if row.status == "ok" else None)
            if row.repeat:
                # Each repeat is its own set of counterfactual pairs; ids must stay unique within one audit.
                suffix = f"#r{row.repeat}"
                pair = None if audit_row.pair_id is None else audit_row.pair_id + suffix
                audit_row = dataclasses.replace(audit_row, item_id=audit_row.item_id + suffix, pair_id=pair)
            rows.append(audit_row)
        models = tuple(
            ModelAudit(alias, tuple(rows), missing[alias], audit(rows, self.risk.audit_config) if rows else None)
            for alias, rows in sorted(by_alias.items())
        )
        return FairnessStats(models)

    def report(self, inputs: StageInputs) -> ReportRecord:
        """The standard run folder with the audit first in final_report.md, its figures in stats_summary.json,
        and the original system's files beside them (pipeline/report/experiment_files.py)."""
        from pipeline.report.experiment_files import write_experiment_files
        from pipeline.report.runs import write_report

        fairness = inputs.record(FAIRNESS, FairnessStats)
        base = self.report_inputs(inputs)
        report_inputs = dataclasses.replace(
            base,
            evaluation={**base.evaluation, **fairness.summary()},
            lead_sections=lambda outputs: fairness_sections(fairness, outputs),
        )
        written = write_report(report_inputs, dagster_run_id=inputs.run_id)
        write_experiment_files(report_inputs, written, fairness, self.risk.sample, dagster_run_id=inputs.run_id)
        return ReportRecord(str(written.run_folder), str(written.report_md), written.status)


def fairness_sections(fairness: FairnessStats, outputs_dir: Path) -> list[str]:
    """The audit's Markdown (verdicts first) and plots for each model; several models get a folder each."""
    from pipeline.report.fairness import write_fairness_report

    lines: list[str] = []
    several = len(fairness.models) > 1
    for model in fairness.models:
        if model.audit is None:
            lines += [f"## Fairness audit: {model.alias}", "", "Not audited: no answers (see errors.log).", ""]
            continue
        folder = outputs_dir / "fairness" / model.alias if several else outputs_dir
        section = write_fairness_report(model.audit, folder)
        if several:
            prefix = f"fairness/{model.alias}/"
            section = [line.replace("](fairness_", f"]({prefix}fairness_") for line in section]
            section = [f"## Fairness audit: {model.alias}" if line == "## Fairness audit" else line for line in section]
        if model.missing:
            section += ["", f"{model.missing} answers were missing (calls not answered) and are not in the audit."]
        lines += [*section, ""]
    return lines
