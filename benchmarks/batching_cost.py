"""What batching saves in assign-cat: estimated tokens and cost at 1, 5, 10 and 20 products per prompt.

Builds the experiment's real call plan for the shipped 141 products (datasets/assign-cat/products.csv) at each
batch size (`--batch-size N` = run.items_per_prompt N), for gpt4o_mini and haiku, and counts, without
sending anything:

- prompt tokens: every rendered message plus the response_format schema, with the project's estimator
  (`pipeline.llm.cost.count_prompt_tokens`: tiktoken o200k_base for gpt-4o-mini; characters / 3.5 for
  Anthropic, which over-counts English for Claude's tokenizer);
- completion tokens: the JSON a correct answer of each call would be (the gold pairs; with batching one
  entry per product with its item_id), counted the same way;
- cost: tokens x the prices in configs/models.yaml; and the budget's upper bound (max_tokens as output).

It prints one table with the saving against batch size 1, and a second one that prices the generic
batch schema (`ClassifyExperiment.batch_schema`, which repeats the per-product schema once per position
with prefixItems, and which assign-cat sends only to local models, where the schema is free) to show why
hosted models get one per-product schema shared across the batch.

    python benchmarks/batching_cost.py [--models gpt4o_mini,haiku] [--sizes 1,5,10,20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline: use litellm's bundled price map

from pipeline.config import load_experiment, load_model_zoo  # noqa: E402
from pipeline.experiments.assign_cat import AssignCatExperiment, TokenEstimate  # noqa: E402
from pipeline.experiments.base import ClassifyExperiment  # noqa: E402


class _GenericBatchSchema(AssignCatExperiment):
    """assign-cat with the generic prefixItems batch schema (what local models get), for the comparison table."""

    def batch_schema(self, item_ids: Sequence[str]) -> dict[str, Any] | None:
        return ClassifyExperiment.batch_schema(self, item_ids)


@dataclass(frozen=True)
class BatchEstimate:
    """The estimate of one (batch size, model)."""

    items_per_prompt: int
    estimate: TokenEstimate


def estimates(
    models: Sequence[str], sizes: Sequence[int], kind: type[AssignCatExperiment] = AssignCatExperiment
) -> list[BatchEstimate]:
    """One estimate per (batch size, model) over the shipped products."""
    zoo = load_model_zoo()
    results = []
    for size in sizes:
        experiment = kind(load_experiment("assign-cat", [f"run.items_per_prompt={size}"]))
        items = experiment.load_items().items
        for alias in models:
            results.append(BatchEstimate(size, experiment.estimate_tokens(items, alias, zoo)))
    return results


def table(results: Sequence[BatchEstimate]) -> str:
    """Markdown table: per batch size and model, calls, tokens, cost, and the saving against the first size."""
    baseline: dict[str, TokenEstimate] = {}
    lines = [
        "| products/prompt | model | calls | prompt tok | completion tok | total tok | cost USD | saving vs 1 "
        "| budget upper bound USD |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results:
        size, result = row.items_per_prompt, row.estimate
        base = baseline.setdefault(result.alias, result)
        saving = f"{1 - result.cost_usd / base.cost_usd:.1%}" if base.cost_usd else "n/a"
        lines.append(
            f"| {size} | {result.alias} | {result.calls} | {result.prompt_tokens:,} | {result.completion_tokens:,} | "
            f"{result.total_tokens:,} | {result.cost_usd:.4f} | {saving} | {result.upper_bound_usd:.4f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the tables; optionally write the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--models", default="gpt4o_mini,haiku", help="comma-separated zoo aliases")
    parser.add_argument("--sizes", default="1,5,10,20", help="comma-separated products per prompt (first = baseline)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    sizes = [int(s) for s in args.sizes.split(",")]

    shared = estimates(models, sizes)
    generic = estimates(models, sizes, _GenericBatchSchema)
    products = shared[0].estimate.products
    print(f"assign-cat, {products} shipped products, estimated before sending (no call is made)\n")
    print("Shared per-product schema (what assign-cat sends to hosted models):")
    print(table(shared))
    print(
        "\nGeneric prefixItems batch schema (one schema copy per product; assign-cat sends it only to local "
        "models, where it is free), priced as if billed, for comparison:"
    )
    print(table(generic))
    print(
        "\nprompt tok: messages + response_format schema (tiktoken for OpenAI, chars/3.5 for Anthropic); "
        "completion tok: the expected answer JSON; budget upper bound: prompt + max_tokens as output."
    )
    if args.json:
        payload = {
            "products": products,
            "shared_schema": [asdict(row) for row in shared],
            "generic_schema": [asdict(row) for row in generic],
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
