"""Input checks with Great Expectations 1.x: the expectation suite a source snapshot must pass before any call.

dagster-ge does not support GX 1.x, so the source stage's asset check calls this module directly and shows
each expectation's observed value in its metadata. GX takes seconds to import, so a result is kept beside
the snapshot under its sha256: the same snapshot is validated once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.data.loaders import Item

VALIDATION_FORMAT_VERSION = 1


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation's result: what was expected, what was observed, how many rows failed it."""

    expectation: str
    column: str | None
    success: bool
    observed: Any
    unexpected_count: int | None


@dataclass(frozen=True)
class InputValidation:
    """The suite's result on one snapshot."""

    success: bool
    outcomes: tuple[ExpectationOutcome, ...]

    def metadata(self) -> dict[str, Any]:
        """One entry per expectation, for the asset check's metadata."""
        out: dict[str, Any] = {}
        for outcome in self.outcomes:
            name = outcome.expectation.removeprefix("expect_") + (f"[{outcome.column}]" if outcome.column else "")
            seen = outcome.observed if outcome.observed is not None else f"{outcome.unexpected_count} unexpected"
            out[name] = f"{'ok' if outcome.success else 'FAILED'}: {seen}"
        return out


def validate_items(
    items: Sequence[Item], *, labels: Sequence[str] = (), min_rows: int = 1, max_rows: int | None = None
) -> InputValidation:
    """Run the input suite: unique ids, non-empty text, string columns, row count, gold labels allowed."""
    import great_expectations as gx
    import pandas as pd

    frame = pd.DataFrame(
        {
            "item_id": [item.item_id for item in items],
            "text": [str(item.fields.get("text", "")).strip() for item in items],
            "gold": [item.gold for item in items],
        }
    )
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    # Its progress bars would write to the command's terminal on every run; the check's metadata says it all.
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    asset = context.data_sources.add_pandas("assay_items").add_dataframe_asset("items")
    batch = asset.add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": frame})
    suite = gx.ExpectationSuite("assay_input")
    expectations = gx.expectations
    suite.add_expectation(expectations.ExpectTableRowCountToBeBetween(min_value=min_rows, max_value=max_rows))
    suite.add_expectation(expectations.ExpectColumnValuesToBeUnique(column="item_id"))
    suite.add_expectation(expectations.ExpectColumnValuesToNotBeNull(column="item_id"))
    suite.add_expectation(expectations.ExpectColumnValueLengthsToBeBetween(column="text", min_value=1))
    suite.add_expectation(expectations.ExpectColumnValuesToBeOfType(column="text", type_="str"))
    if labels and frame["gold"].notna().any():
        suite.add_expectation(expectations.ExpectColumnValuesToBeInSet(column="gold", value_set=list(labels)))
    result = batch.validate(suite)
    outcomes = []
    for res in result.results:
        config = res.expectation_config
        outcomes.append(
            ExpectationOutcome(
                config.type if config is not None else "unknown",
                config.kwargs.get("column") if config is not None else None,
                bool(res.success),
                _plain(res.result.get("observed_value")),
                res.result.get("unexpected_count"),
            )
        )
    return InputValidation(bool(result.success), tuple(outcomes))


def validate_snapshot(
    snapshot_dir: Path, items: Sequence[Item], sha256: str, *, labels: Sequence[str] = (), max_rows: int | None = None
) -> InputValidation:
    """`validate_items`, kept under the snapshot's sha256 so an unchanged snapshot is not validated again."""
    cache = snapshot_dir / "input_validation.json"
    key = {"sha256": sha256, "labels": list(labels), "max_rows": max_rows, "format_version": VALIDATION_FORMAT_VERSION}
    try:
        saved = json.loads(cache.read_text(encoding="utf-8"))
        if saved.get("key") == key:
            return InputValidation(saved["success"], tuple(ExpectationOutcome(**o) for o in saved["outcomes"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    validation = validate_items(items, labels=labels, max_rows=max_rows)
    body = {"key": key, "success": validation.success, "outcomes": [asdict(o) for o in validation.outcomes]}
    cache.write_text(json.dumps(body, default=str), encoding="utf-8")
    return validation


def _plain(value: Any) -> Any:
    """A JSON-able observed value (GX returns numpy scalars)."""
    return value.item() if hasattr(value, "item") else value
