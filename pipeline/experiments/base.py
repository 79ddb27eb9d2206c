"""The classify experiment kind: items -> prompts -> calls; answers -> validated labels per item.

Subclasses (assign_cat) change the item loading, the prompt context, the answer schema and the business
rules; planning, batching several items per prompt, matching answers back and repair stay here.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.calls import CallSpec
from pipeline.config import REPO_ROOT, ExperimentConfig, ModelZoo
from pipeline.data.loaders import Item, ItemSet, load_item_set
from pipeline.extract import BusinessRule, extract_json, validate_answer
from pipeline.llm.errors import ConfigError, OutputValidationError
from pipeline.plan import CallPlan, PlannedCall
from pipeline.prompts import PromptSet, render

if TYPE_CHECKING:
    from pipeline.stages import Stage


@dataclass(frozen=True)
class ItemAnswer:
    """One item's answer from one call (after the repair call, if there was one)."""

    item_id: str
    call_id: str
    alias: str
    repeat: int
    label: str | None
    answer: Any
    valid: bool
    reason: str
    raw_response: str
    model_used: str
    repaired: bool = False


class ReportHooks:
    """Report-stage hooks of an experiment kind; ClassifyExperiment inherits the generic ones."""

    results_filename = "results.csv"

    def write_inputs(self, items: Sequence[Item], inputs_dir: Path) -> None:
        """Copy what went in to the run folder's inputs/ (generic: items.json)."""
        payload = [{"item_id": item.item_id, "fields": dict(item.fields), "gold": item.gold} for item in items]
        (inputs_dir / "items.json").write_text(json.dumps(payload, indent=2, ensure_ascii=False, default=str))

    def result_row(self, row: dict[str, Any], item: Item | None) -> dict[str, Any]:
        """One row of the results CSV."""
        return {
            "item_id": row["item_id"],
            "text": item.fields.get("text", "") if item else "",
            "label": row["label"],
            "gold": item.gold if item else None,
            "valid": row["status"] == "ok",
            "status": row["status"],
            "reason": row["reason"],
            "raw_response": row["raw_response"],
            "model_used": row["model_used"],
            "alias": row["alias"],
            "repeat": row["repeat"],
        }

    def report_sections(
        self, evaluation: dict[str, Any], rows: list[dict[str, Any]], items: Sequence[Item], outputs_dir: Path
    ) -> list[str]:
        """Extra Markdown for the final report (generic: a confusion matrix per model)."""
        from pipeline.report.plots import plot_confusion_matrix
        from pipeline.stats.metrics import confusion_matrix

        gold = {item.item_id: item.gold for item in items}
        sections: list[str] = []
        for alias in sorted({row["alias"] for row in rows}):
            labelled = [row for row in rows if row["alias"] == alias and gold.get(row["item_id"])]
            if not labelled:
                continue
            matrix = confusion_matrix([gold[row["item_id"]] for row in labelled], [row["label"] for row in labelled])
            image = outputs_dir / f"confusion_{alias}.png"
            plot_confusion_matrix(matrix, image, title=f"{alias}: gold (rows) vs answer (columns)")
            sections += [f"## Confusion matrix: {alias}", "", f"![confusion matrix {alias}]({image.name})", ""]
        return sections


class ClassifyExperiment(ReportHooks):
    """Generic classification: pick one of `output.labels` for each item."""

    kind = "classify"

    def __init__(self, config: ExperimentConfig) -> None:
        self.config = config
        self.prompts = PromptSet.from_config(config.prompts)
        self.zoo: ModelZoo | None = None
        """The session's model zoo (set by ExperimentSession), for hooks that price calls in reports."""
        if config.run.items_per_prompt > 1 and not config.prompts.user_batch:
            raise ConfigError(
                f"experiment {config.name!r}: items_per_prompt={config.run.items_per_prompt} needs "
                "prompts.user_batch (a template with {items}); set it or use items_per_prompt 1"
            )

    # -- items ------------------------------------------------------------------------------------------
    def load_items(self) -> ItemSet:
        """Items of this run (dataset config after overrides; --single-item replaces the dataset)."""
        dataset = self.config.dataset
        if dataset.single_item is not None:
            text = dataset.single_item.strip()
            if not text:
                raise ConfigError("--single-item is empty; give the text to classify")
            item_id = "single-" + hashlib.sha1(text.encode()).hexdigest()[:8]
            return ItemSet([Item(item_id, {"text": text})], [], "--single-item")
        return load_item_set(dataset, REPO_ROOT)

    # -- prompts and schema -----------------------------------------------------------------------------
    def context(self) -> dict[str, Any]:
        """Experiment-level prompt fields (the same for every item)."""
        return {"labels": ", ".join(self.config.output.labels)}

    def answer_schema(self) -> dict[str, Any] | None:
        """JSON Schema of one item's answer (None = free text, no validation)."""
        if self.config.output.json_schema is not None:
            return self.config.output.json_schema
        if not self.config.output.labels:
            return None
        field = self.config.output.label_field
        return {
            "type": "object",
            "properties": {field: {"type": "string", "enum": list(self.config.output.labels)}},
            "required": [field],
            "additionalProperties": False,
        }

    def validation_schema(self) -> dict[str, Any] | None:
        """Schema an answer is validated against (default: the answer schema sent for constrained decoding).

        A kind may validate only the shape here and leave the rest to `rules()`, whose reasons can name
        the valid choices (they go into the repair prompt).
        """
        return self.answer_schema()

    def rules(self) -> tuple[BusinessRule, ...]:
        """Business rules beyond the schema (none for plain classification)."""
        return ()

    def label_of(self, answer: Any) -> str | None:
        """The label an answer gives (compared with the gold label)."""
        if isinstance(answer, dict):
            value = answer.get(self.config.output.label_field)
            return None if value is None else str(value)
        return None

    def batch_schema(self, item_ids: Sequence[str]) -> dict[str, Any] | None:
        """Schema of a batched answer: one entry per item, in order, each naming its item_id."""
        single = self.answer_schema()
        if single is None:
            return None
        entries = [_with_item_id(single, item_id) for item_id in item_ids]
        array = {
            "type": "array",
            "prefixItems": entries,
            "items": False,
            "minItems": len(entries),
            "maxItems": len(entries),
        }
        return {
            "type": "object",
            "properties": {"answers": array},
            "required": ["answers"],
            "additionalProperties": False,
        }

    def response_format(self, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        """OpenAI-style response_format for constrained decoding (None when not constrained)."""
        if schema is None or not self.config.output.constrained:
            return None
        return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}

    def messages_for(self, items: Sequence[Item]) -> list[dict[str, str]]:
        """Rendered messages for one call about `items`."""
        context = self.context()
        if len(items) == 1 and self.config.run.items_per_prompt == 1:
            item = items[0]
            return self.prompts.messages({**context, **item.fields, "item_id": item.item_id})
        lines = [
            render(self.config.prompts.item_line, {**item.fields, "item_id": item.item_id}, "item_line")
            for item in items
        ]
        batch_prompts = PromptSet(
            self.prompts.system, self.config.prompts.user_batch, self.prompts.repair, self.prompts.version
        )
        return batch_prompts.messages({**context, "items": "\n".join(lines), "n_items": len(items)})

    # -- stages ---------------------------------------------------------------------------------------------
    def stages(self) -> list[Stage]:
        """The stage graph: source -> llm -> extractions -> repair -> answers -> evaluation [-> judge] -> report."""
        from pipeline.experiments.classify_stages import ClassifyStages

        return ClassifyStages(self).declare()

    # -- planning ---------------------------------------------------------------------------------------
    def planned_calls(self, items: Sequence[Item], aliases: Sequence[str], zoo: ModelZoo) -> list[PlannedCall]:
        """Every call: aliases x repeats x chunks of items_per_prompt items (identical ones not merged yet)."""
        params = self.config.params
        size = self.config.run.items_per_prompt
        chunks = [list(items[start : start + size]) for start in range(0, len(items), size)]
        calls: list[PlannedCall] = []
        for alias in aliases:
            model = zoo.get(alias)
            for repeat in range(params.repeat_offset, params.repeat_offset + params.repeats):
                for chunk in chunks:
                    ids = tuple(item.item_id for item in chunk)
                    schema = self.answer_schema() if size == 1 else self.batch_schema(ids)
                    spec = CallSpec(
                        alias=alias,
                        model=model.model,
                        version=model.version,
                        api_base=model.api_base,
                        messages=tuple(self.messages_for(chunk)),
                        temperature=params.temperature,
                        top_p=params.top_p,
                        max_tokens=params.max_tokens * len(chunk),
                        response_format=self.response_format(schema),
                        seed=params.seed,
                        repeat=repeat,
                        item_id=ids[0] if len(ids) == 1 else f"batch:{ids[0]}..{ids[-1]}",
                    )
                    calls.append(PlannedCall(spec, ids))
        return calls

    def expected_calls(self, aliases: Sequence[str]) -> int:
        """Primary calls of a fresh run, cheaply (no rendering): chunks of items x models x repeats."""
        items = len(self.load_items().items)
        per_prompt = self.config.run.items_per_prompt
        return -(-items // per_prompt) * len(aliases) * self.config.params.repeats

    def plan(self, items: Sequence[Item], aliases: Sequence[str], zoo: ModelZoo) -> CallPlan:
        """The primary call stage's plan: identical prompts are one call that answers all their items."""
        return CallPlan.build(self.config.name, "llm", self.planned_calls(items, aliases, zoo))

    def extra_metrics(self, rows: list[dict[str, Any]], gold: Mapping[str, str | None]) -> dict[str, Any]:
        """Kind-specific metrics beside accuracy (none for plain classification)."""
        return {}

    # -- answers ----------------------------------------------------------------------------------------
    def interpret(self, planned: PlannedCall, text: str, model_used: str) -> list[ItemAnswer]:
        """Per-item answers of one call's text (invalid ones carry the reason)."""
        spec = planned.spec

        def answer(item_id: str, value: Any, reason: str) -> ItemAnswer:
            label = self.label_of(value) if not reason else None
            return ItemAnswer(
                item_id, spec.call_id, spec.alias, spec.repeat, label, value, not reason, reason, text, model_used
            )

        if self.config.run.items_per_prompt == 1:
            # One item per prompt; several item ids only when their prompts were identical (one shared call).
            try:
                value = extract_json(text)
            except OutputValidationError as exc:
                return [answer(item_id, None, str(exc)) for item_id in planned.item_ids]
            reason = validate_answer(value, self.validation_schema(), self.rules()) or ""
            return [answer(item_id, value, reason) for item_id in planned.item_ids]
        try:
            value = extract_json(text)
            entries = value.get("answers") if isinstance(value, dict) else value
            if not isinstance(entries, list):
                raise OutputValidationError("expected {'answers': [...]} with one entry per item")
        except OutputValidationError as exc:
            return [answer(item_id, None, str(exc)) for item_id in planned.item_ids]
        by_id = {str(entry.get("item_id")): entry for entry in entries if isinstance(entry, dict)}
        results = []
        for item_id in planned.item_ids:
            entry = by_id.get(item_id)
            if entry is None:
                results.append(answer(item_id, None, f"the batched answer has no entry for item {item_id!r}"))
                continue
            value = {key: val for key, val in entry.items() if key != "item_id"}
            results.append(answer(item_id, value, validate_answer(value, self.validation_schema(), self.rules()) or ""))
        return results

    def repair_spec(self, planned: PlannedCall, text: str, reasons: Sequence[str]) -> CallSpec:
        """The one repair call: the conversation so far, the invalid answer, and what was wrong with it."""
        spec = planned.spec
        reason = "; ".join(dict.fromkeys(reasons))
        messages = (
            *spec.messages,
            {"role": "assistant", "content": text},
            {"role": "user", "content": render(self.prompts.repair, {"reason": reason}, "repair")},
        )
        return CallSpec(
            alias=spec.alias,
            model=spec.model,
            version=spec.version,
            api_base=spec.api_base,
            messages=messages,
            temperature=spec.temperature,
            top_p=spec.top_p,
            max_tokens=spec.max_tokens,
            response_format=spec.response_format,
            seed=spec.seed,
            repeat=spec.repeat,
            item_id=spec.item_id,
            purpose="repair",
        )


def _with_item_id(schema: dict[str, Any], item_id: str) -> dict[str, Any]:
    """`schema` (an object, or anyOf objects) with a required `item_id` fixed to `item_id`."""
    if "anyOf" in schema:
        return {"anyOf": [_with_item_id(alternative, item_id) for alternative in schema["anyOf"]]}
    result = copy.deepcopy(schema)
    result["properties"] = {"item_id": {"const": item_id}, **result.get("properties", {})}
    result["required"] = ["item_id", *[name for name in result.get("required", []) if name != "item_id"]]
    return result
