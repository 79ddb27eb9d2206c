"""The assign_cat experiment kind: classify products into a two-level taxonomy (category + subcategory).

Items come from a products CSV (`pipeline.data.products`), or one product from `--single-product`; the
taxonomy XML is rendered into the prompt as a list to choose from, and an answer is
``{"category": <id>, "subcategory": <id>}`` that must name a pair that exists. Constrained decoding gets
`Taxonomy.json_schema()` (one anyOf branch per category), and the pair is checked again as a business
rule, because a model that ignores response_format must still be caught: an answer naming a pair that
does not exist gets the one repair call (with a reason that lists the valid choices), then counts as
invalid.

Reports add accuracy at category and subcategory level (Wilson intervals), a category-level confusion
matrix per model, and the projected cost of an 800-product catalogue, measured and estimated.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.calls import CallSpec
from pipeline.config import REPO_ROOT, ExperimentConfig, ModelZoo, load_model_zoo
from pipeline.data.loaders import Item, ItemError, ItemSet, resolve_path, sample_items
from pipeline.data.products import (
    GOLD_CATEGORY_COLUMN,
    GOLD_SUBCATEGORY_COLUMN,
    Product,
    ProductInputError,
    gold_labels_from,
    load_products_csv,
    single_product,
)
from pipeline.data.taxonomy import Taxonomy, TaxonomyError, load_taxonomy
from pipeline.experiments.base import ClassifyExperiment
from pipeline.extract import BusinessRule
from pipeline.llm.cost import TOKENS_PER_MESSAGE, count_prompt_tokens, price_per_token
from pipeline.llm.errors import ConfigError
from pipeline.plan import PlannedCall

__all__ = [
    "CATALOG_SIZE",
    "PRODUCT_LOADERS",
    "AssignCatExperiment",
    "CostProjection",
    "TokenEstimate",
    "answer_tokens",
    "product_item",
]

PRODUCT_LOADERS = ("products_csv", "csv")
"""dataset.loader values this kind reads as a products CSV (`--input file.csv` sets `csv`)."""

CATALOG_SIZE = 800
"""Products in the catalogue whose classification cost the report projects."""

_GOLD_COLUMNS = (GOLD_CATEGORY_COLUMN, GOLD_SUBCATEGORY_COLUMN)
# Item fields the kind sets itself; CSV columns of the same name are not copied over them.
_RESERVED_FIELDS = frozenset({"product_id", "title", "description", "text", "item_id", "items", "n_items"})


def product_item(product: Product, gold: str | None = None) -> Item:
    """The Item of one product: prompt fields title, description, text (title + description) and extra columns.

    Gold columns are left out of the fields so that no template can leak the answer into a prompt.
    """
    text = f"{product.title}. {product.description}" if product.description else product.title
    fields: dict[str, Any] = {
        "product_id": product.product_id,
        "title": product.title,
        "description": product.description,
        "text": text,
    }
    for name, value in product.extra.items():
        if name not in _GOLD_COLUMNS and name not in _RESERVED_FIELDS:
            fields.setdefault(name, value)
    return Item(product.product_id, fields, gold)


@dataclass(frozen=True)
class TokenEstimate:
    """Estimated tokens and cost of classifying a set of products on one model alias."""

    alias: str
    """Model-zoo alias priced."""
    model: str
    """Its litellm model id."""
    products: int
    """Products covered."""
    calls: int
    """Calls needed (products / items_per_prompt, rounded up, times repeats)."""
    prompt_tokens: int
    """Prompt tokens, counted with the model's tokenizer (tiktoken) or characters / 3.5 (see method)."""
    completion_tokens: int
    """Tokens of the expected answers (the JSON a correct answer would be), counted the same way."""
    max_completion_tokens: int
    """Sum of max_tokens: what the budget reserves before the calls (an upper bound)."""
    cost_usd: float
    """prompt_tokens x input price + completion_tokens x output price."""
    upper_bound_usd: float
    """prompt_tokens x input price + max_completion_tokens x output price (the pre-run budget estimate)."""
    method: str
    """How tokens were counted, e.g. 'tiktoken:o200k_base' or 'chars/3.5'."""

    @property
    def total_tokens(self) -> int:
        """prompt + expected completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    @property
    def usd_per_product(self) -> float:
        """cost_usd / products (0 when there are none)."""
        return self.cost_usd / self.products if self.products else 0.0


@dataclass(frozen=True)
class CostProjection:
    """Projected cost of a catalogue of `catalog_size` products on one alias."""

    alias: str
    """Model-zoo alias."""
    source: str
    """'measured' (this run's cost per product) or 'estimated' (tokenizer estimate of this run's prompts)."""
    usd_per_product: float
    """Cost of one product."""
    catalog_size: int
    """Products projected."""
    products_basis: int
    """Products the per-product figure was computed from."""

    @property
    def catalog_usd(self) -> float:
        """usd_per_product x catalog_size."""
        return self.usd_per_product * self.catalog_size


def answer_tokens(model: str, text: str) -> int:
    """Tokens of `text` as a completion of `model`, counted the way cost.py counts prompts (tiktoken or chars/3.5)."""
    spec = CallSpec(alias="-", model=model, messages=({"role": "assistant", "content": text},), response_format=None)
    tokens, _ = count_prompt_tokens(spec)
    return max(1, tokens - TOKENS_PER_MESSAGE - 3)  # count_prompt_tokens adds per-message and priming overhead


class AssignCatExperiment(ClassifyExperiment):
    """Assign each product a (category, subcategory) pair of the experiment's taxonomy."""

    kind = "assign_cat"
    results_filename = "classifications.csv"

    def __init__(self, config: ExperimentConfig) -> None:
        super().__init__(config)
        if not config.dataset.taxonomy:
            raise ConfigError(
                f"experiment {config.name!r} (kind assign_cat) needs dataset.taxonomy, the taxonomy XML file; "
                "set it, e.g. dataset.taxonomy=datasets/assign-cat/taxonomy.xml"
            )
        self.taxonomy_path = resolve_path(config.dataset.taxonomy, REPO_ROOT)
        if not self.taxonomy_path.exists():
            raise ConfigError(
                f"dataset.taxonomy {str(self.taxonomy_path)!r} does not exist; give the path of a taxonomy XML "
                "file (relative to the repository root or absolute)"
            )
        try:
            self.taxonomy: Taxonomy = load_taxonomy(self.taxonomy_path)
        except TaxonomyError as exc:
            raise ConfigError(f"dataset.taxonomy is not a valid taxonomy:\n{exc}") from None
        self._context = {  # rendered once: every call's prompt uses it
            "taxonomy": self.taxonomy.to_prompt_text(),
            "taxonomy_xml": self.taxonomy_path.read_text(encoding="utf-8"),
            "taxonomy_name": self.taxonomy.name,
            "categories": ", ".join(category.id for category in self.taxonomy.categories),
        }

    # -- items ------------------------------------------------------------------------------------------
    def load_items(self) -> ItemSet:
        """Products of this run: `--single-product`, else the products CSV; bad rows go to `errors`."""
        dataset = self.config.dataset
        if dataset.single_item is not None:
            try:
                product = single_product(dataset.single_item)
            except ProductInputError as exc:
                raise ConfigError(f"--single-product: {exc}") from None
            return ItemSet([product_item(product)], [], "--single-product")
        if dataset.loader not in PRODUCT_LOADERS:
            raise ConfigError(
                f"experiment {self.config.name!r} (kind assign_cat) reads products from a CSV, but dataset.loader "
                f"is {dataset.loader!r}; use dataset.loader=products_csv (or --input products.csv)"
            )
        if not dataset.path:
            raise ConfigError(
                f"dataset.loader {dataset.loader!r} needs dataset.path, a products CSV with product_id and title "
                "columns (or run with --input products.csv)"
            )
        path = resolve_path(dataset.path, REPO_ROOT)
        if not path.exists():
            raise ConfigError(f"dataset.path {str(path)!r} does not exist; give an existing products CSV")
        try:
            load = load_products_csv(path)
            gold = gold_labels_from(load, self.taxonomy) if set(_GOLD_COLUMNS) <= set(load.columns) else {}
        except ProductInputError as exc:
            raise ConfigError(str(exc)) from None
        items = [
            product_item(product, "/".join(gold[product.product_id]) if product.product_id in gold else None)
            for product in load.products
        ]
        errors = [ItemError(error.row_number, error.reason, error.raw) for error in load.errors]
        return sample_items(ItemSet(items, errors, str(path)), dataset)

    # -- prompts and schema -----------------------------------------------------------------------------
    def context(self) -> dict[str, Any]:
        """The taxonomy as a list to choose from ({taxonomy}), its raw XML ({taxonomy_xml}), its name
        ({taxonomy_name}) and the category ids ({categories})."""
        return dict(self._context)

    def answer_schema(self) -> dict[str, Any]:
        """Constrained-decoding schema: only existing (category, subcategory) pairs (one anyOf per category).

        `Taxonomy.json_schema()` with `"type": "object"` added at the root: Anthropic tool schemas (litellm's
        route for response_format) must declare an object root, and anyOf-first decoders (llama.cpp
        grammars, jsonschema) read the schema the same either way. `output.json_schema`, when set, wins
        (e.g. for OpenAI strict mode, which refuses a root anyOf; the pair rule still checks every answer).
        """
        if self.config.output.json_schema is not None:
            return self.config.output.json_schema
        return {"type": "object", **self.taxonomy.json_schema()}

    def validation_schema(self) -> dict[str, Any]:
        """Shape check only; `rules()` checks the pair and says which ids are valid (a clearer repair reason
        than jsonschema's 'not valid under any of the given schemas'). Extra fields are tolerated: a model
        that adds a 'reason' has still answered.
        """
        return {
            "type": "object",
            "properties": {"category": {"type": "string"}, "subcategory": {"type": "string"}},
            "required": ["category", "subcategory"],
        }

    def rules(self) -> tuple[BusinessRule, ...]:
        """The pair must exist in the taxonomy."""
        return (self.pair_problem,)

    def pair_problem(self, answer: Any) -> str | None:
        """None when `answer` names an existing pair, else what is wrong and the valid choices."""
        if not isinstance(answer, Mapping):
            return f"expected an object with category and subcategory, found {type(answer).__name__}"
        category, subcategory = answer.get("category"), answer.get("subcategory")
        if not isinstance(category, str) or not isinstance(subcategory, str):
            return f"category and subcategory must be id strings, found {category!r} and {subcategory!r}"
        if self.taxonomy.has_pair(category, subcategory):
            return None
        category_ids = [cat.id for cat in self.taxonomy.categories]
        if category not in category_ids:
            return f"category {category!r} does not exist; choose one of: {', '.join(category_ids)}"
        choices = ", ".join(self.taxonomy.category(category).subcategory_ids())
        try:
            owner = self.taxonomy.category_of(subcategory)
        except KeyError:
            return f"subcategory {subcategory!r} does not exist in category {category!r}; choose one of: {choices}"
        return (
            f"subcategory {subcategory!r} belongs to category {owner!r}, not {category!r}; the pair "
            f"({category}, {subcategory}) does not exist. Subcategories of {category!r}: {choices}"
        )

    def label_of(self, answer: Any) -> str | None:
        """'category/subcategory' (the gold label has the same form)."""
        if isinstance(answer, Mapping) and isinstance(answer.get("category"), str):
            return f"{answer['category']}/{answer.get('subcategory')}"
        return None

    def planned_calls(self, items: Sequence[Item], aliases: Sequence[str], zoo: ModelZoo) -> list[PlannedCall]:
        """The base calls, built one alias at a time so that `batch_schema` knows whether the schema is billed."""
        calls: list[PlannedCall] = []
        try:
            for alias in aliases:
                self._schema_billed = zoo.get(alias).provider != "local"
                calls.extend(super().planned_calls(items, [alias], zoo))
        finally:
            self._schema_billed = True
        return calls

    _schema_billed = True
    """Whether the model being planned bills the response_format schema as prompt tokens (hosted APIs do)."""

    def batch_schema(self, item_ids: Sequence[str]) -> dict[str, Any] | None:
        """``{"answers": [...]}`` with exactly one entry per product, each an existing pair.

        Local models get the generic schema (prefixItems: position i is fixed to item i's id), which
        costs nothing there (llama.cpp turns it into a grammar) and keeps a small model from skipping or
        repeating a product. Hosted APIs bill the schema as prompt tokens, and repeating the per-product
        schema (~700 tokens with this taxonomy) for every position cancels most of what batching saves
        (benchmarks/batching_cost.py); they get one entry schema shared by all positions, whose item_id
        is an enum of the batch's ids. Answers are matched back by item_id either way, and a product
        left out gets the repair call like any invalid answer.
        """
        if not self._schema_billed:
            return super().batch_schema(item_ids)
        ids = list(item_ids)
        entry = {
            "anyOf": [
                {
                    "type": "object",
                    "properties": {
                        "item_id": {"enum": ids},
                        "category": {"const": category.id},
                        "subcategory": {"enum": category.subcategory_ids()},
                    },
                    "required": ["item_id", "category", "subcategory"],
                    "additionalProperties": False,
                }
                for category in self.taxonomy.categories
            ]
        }
        return {
            "type": "object",
            "properties": {"answers": {"type": "array", "items": entry, "minItems": len(ids), "maxItems": len(ids)}},
            "required": ["answers"],
            "additionalProperties": False,
        }

    # -- estimates --------------------------------------------------------------------------------------
    def expected_answer(self, items: Sequence[Item]) -> str:
        """The JSON a correct answer about `items` would be (gold pair, else the taxonomy's first pair)."""
        fallback = "/".join(self.taxonomy.pairs()[0])

        def pair(item: Item) -> dict[str, str]:
            category, _, subcategory = (item.gold or fallback).partition("/")
            return {"category": category, "subcategory": subcategory}

        if len(items) == 1 and self.config.run.items_per_prompt == 1:
            return json.dumps(pair(items[0]))
        return json.dumps({"answers": [{"item_id": item.item_id, **pair(item)} for item in items]})

    def estimate_tokens(self, items: Sequence[Item], alias: str, zoo: ModelZoo) -> TokenEstimate:
        """Tokens and cost of this experiment's calls about `items` on `alias`, before sending anything.

        Prompt tokens: the rendered messages plus the response_format schema, counted by
        `pipeline.llm.cost.count_prompt_tokens` (tiktoken for OpenAI models, characters / 3.5 otherwise).
        Completion tokens: the expected answer JSON of each call, counted the same way.
        """
        by_id = {item.item_id: item for item in items}
        config = zoo.get(alias)
        per_in, per_out = price_per_token(config)
        plan = self.plan(items, [alias], zoo)
        prompt = completion = max_completion = 0
        method = ""
        for call in plan.calls:
            tokens, method = count_prompt_tokens(call.spec)
            prompt += tokens
            completion += answer_tokens(call.spec.model, self.expected_answer([by_id[i] for i in call.item_ids]))
            max_completion += call.spec.max_tokens or 0
        return TokenEstimate(
            alias=alias,
            model=config.model,
            products=len(by_id),
            calls=len(plan.calls),
            prompt_tokens=prompt,
            completion_tokens=completion,
            max_completion_tokens=max_completion,
            cost_usd=prompt * per_in + completion * per_out,
            upper_bound_usd=prompt * per_in + max_completion * per_out,
            method=method,
        )

    # -- evaluation -------------------------------------------------------------------------------------
    def extra_metrics(self, rows: list[dict[str, Any]], gold: Mapping[str, str | None]) -> dict[str, Any]:
        """Accuracy at category and at subcategory level (Wilson 95% intervals); invalid/missing count as wrong."""
        from pipeline.stats.proportions import wilson_interval

        labelled = [row for row in rows if gold.get(row["item_id"])]
        if not labelled:
            return {}
        category_hits = subcategory_hits = 0
        for row in labelled:
            label = row.get("label")
            if not label:
                continue
            gold_label = str(gold[row["item_id"]])
            category_hits += label.split("/", 1)[0] == gold_label.split("/", 1)[0]
            subcategory_hits += label == gold_label
        n = len(labelled)
        return {
            "category_accuracy": asdict(wilson_interval(category_hits, n)),
            "subcategory_accuracy": asdict(wilson_interval(subcategory_hits, n)),
            "category_correct": category_hits,
            "subcategory_correct": subcategory_hits,
        }

    # -- report -----------------------------------------------------------------------------------------
    def write_inputs(self, items: Sequence[Item], inputs_dir: Path) -> None:
        """inputs/products.json (the products as classified, with gold) and a copy of the taxonomy XML."""
        products = []
        for item in items:
            gold_category, _, gold_subcategory = (item.gold or "").partition("/")
            record = {key: value for key, value in item.fields.items() if key != "text"}
            record.update(
                {"product_id": item.item_id, "gold_category": gold_category, "gold_subcategory": gold_subcategory}
            )
            products.append(record)
        (inputs_dir / "products.json").write_text(
            json.dumps(products, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        shutil.copyfile(self.taxonomy_path, inputs_dir / "taxonomy.xml")

    def result_row(self, row: dict[str, Any], item: Item | None) -> dict[str, Any]:
        """One row of classifications.csv; category/subcategory are empty unless the answer is valid."""
        valid = row["status"] == "ok"
        value = row.get("answer")
        answer: dict[str, Any] = value if valid and isinstance(value, dict) else {}
        gold_category, _, gold_subcategory = ((item.gold if item else None) or "").partition("/")
        return {
            "product_id": row["item_id"],
            "title": item.fields.get("title", "") if item else "",
            "category": answer.get("category", ""),
            "subcategory": answer.get("subcategory", ""),
            "valid": valid,
            "raw_response": row["raw_response"],
            "model_used": row["model_used"],
            "gold_category": gold_category,
            "gold_subcategory": gold_subcategory,
            "status": row["status"],
            "reason": row["reason"],
            "alias": row["alias"],
            "repeat": row["repeat"],
            "repaired": bool(row.get("repaired")),
        }

    def report_sections(
        self, evaluation: dict[str, Any], rows: list[dict[str, Any]], items: Sequence[Item], outputs_dir: Path
    ) -> list[str]:
        """Accuracy by level, a category-level confusion matrix per model, and the 800-product cost projection."""
        from pipeline.report.plots import plot_confusion_matrix
        from pipeline.stats.metrics import confusion_matrix

        sections = ["## Accuracy by level", ""]
        models = evaluation.get("models", {})
        if any("category_accuracy" in metrics for metrics in models.values()):
            sections += [
                "| model | products with gold | category | 95% CI | subcategory | 95% CI |",
                "|---|---|---|---|---|---|",
            ]
            for alias, metrics in models.items():
                if "category_accuracy" not in metrics:
                    continue
                cat, sub = metrics["category_accuracy"], metrics["subcategory_accuracy"]
                sections.append(
                    f"| {alias} | {metrics.get('labelled', '')} | {cat['estimate']:.3f} | "
                    f"[{cat['low']:.3f}, {cat['high']:.3f}] | {sub['estimate']:.3f} | "
                    f"[{sub['low']:.3f}, {sub['high']:.3f}] |"
                )
            sections += [
                "",
                "Subcategory accuracy is the accuracy of the full (category, subcategory) pair. Invalid and missing "
                "answers count as wrong; intervals are Wilson score intervals.",
                "",
            ]
        else:
            sections += ["No product has a gold label, so there is no accuracy to report.", ""]

        gold = {item.item_id: item.gold for item in items}
        category_ids = [category.id for category in self.taxonomy.categories]
        for alias in sorted({row["alias"] for row in rows}):
            labelled = [row for row in rows if row["alias"] == alias and gold.get(row["item_id"])]
            if not labelled:
                continue
            matrix = confusion_matrix(
                [str(gold[row["item_id"]]).split("/", 1)[0] for row in labelled],
                [row["label"].split("/", 1)[0] if row.get("label") else None for row in labelled],
                labels=category_ids,
            )
            image = outputs_dir / f"confusion_category_{alias}.png"
            plot_confusion_matrix(matrix, image, title=f"{alias}: gold category (rows) vs answer (columns)")
            sections += [
                f"## Confusion matrix (category level): {alias}",
                "",
                f"![confusion matrix {alias}]({image.name})",
                "",
            ]

        sections += self._cost_section(evaluation, rows, items, outputs_dir)
        return sections

    def cost_projections(
        self, evaluation: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], items: Sequence[Item], zoo: ModelZoo
    ) -> list[CostProjection]:
        """Measured projections for the run's models, estimated ones for every API alias of the zoo."""
        projections = []
        for alias, metrics in evaluation.get("models", {}).items():
            answered = {row["item_id"] for row in rows if row["alias"] == alias and row["status"] != "missing"}
            if answered:
                per_product = float(metrics.get("cost_usd", 0.0)) / len(answered)
                projections.append(CostProjection(alias, "measured", per_product, CATALOG_SIZE, len(answered)))
        if items:
            for alias in self.api_aliases(zoo):
                estimate = self.estimate_tokens(items, alias, zoo)
                projections.append(
                    CostProjection(alias, "estimated", estimate.usd_per_product, CATALOG_SIZE, estimate.products)
                )
        return projections

    @staticmethod
    def api_aliases(zoo: ModelZoo) -> dict[str, str]:
        """Aliases of hosted APIs (those that need a key and are not local models), alias -> model id."""
        return {
            alias: config.model
            for alias, config in zoo.models.items()
            if config.needs_key and config.provider != "local" and config.api_base is None
        }

    def _cost_section(
        self, evaluation: dict[str, Any], rows: list[dict[str, Any]], items: Sequence[Item], outputs_dir: Path
    ) -> list[str]:
        zoo = self.zoo or load_model_zoo()  # the session sets self.zoo (with --set overrides applied)
        projections = self.cost_projections(evaluation, rows, items, zoo)
        (outputs_dir / "cost_projection.json").write_text(
            json.dumps([{**asdict(p), "catalog_usd": p.catalog_usd} for p in projections], indent=2, ensure_ascii=False)
            + "\n",
            encoding="utf-8",
        )
        size = self.config.run.items_per_prompt
        lines = [
            f"## Projected cost of a {CATALOG_SIZE}-product catalogue",
            "",
            "| model | source | USD per product | USD for 800 products | based on products |",
            "|---|---|---|---|---|",
        ]
        for projection in projections:
            lines.append(
                f"| {projection.alias} | {projection.source} | {projection.usd_per_product:.6f} | "
                f"{projection.catalog_usd:.4f} | {projection.products_basis} |"
            )
        lines += [
            "",
            f"Method. *Measured*: the cost this run's calls of that model were billed (tokens x the price in "
            f"configs/models.yaml), divided by the products that got a response, times {CATALOG_SIZE}; repair calls "
            "are not included. *Estimated*: this run's prompts (the same products, templates and "
            f"{size} product(s) per prompt) re-addressed to each hosted model and counted before sending: prompt "
            "tokens with tiktoken for OpenAI models and characters / 3.5 otherwise (an over-count for Anthropic and "
            "Gemini), the response_format schema included; completion tokens are those of the expected answer "
            f"JSON; divided by the products, times {CATALOG_SIZE}. Both assume the catalogue's products are like "
            "this run's.",
            "",
        ]
        return lines
