"""`assay compare RUN_A RUN_B`: two assign-cat run folders side by side.

Reads each folder's outputs/classifications.csv, metadata/run_summary.json and outputs/token_usage.json,
matches products by product_id and reports, for the products both runs classified: validity and accuracy
at category and subcategory level against gold (Wilson intervals) with deltas B - A, McNemar's paired test
on the products both runs answered validly, every product whose answer changed, and the cost difference.
The same content is printed as terminal tables and written as Markdown (default <RUN_B>/outputs/compare.md).

A run with several models is compared model by model: when each run has exactly one model those two are
compared (the usual "same products, another model" question), otherwise every model both runs share.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.llm.errors import ConfigError
from pipeline.stats.paired import McNemarResult, mcnemar_test
from pipeline.stats.proportions import Interval, wilson_interval

__all__ = [
    "REQUIRED_COLUMNS",
    "REQUIRED_FILES",
    "ChangedAnswer",
    "Comparison",
    "CostSide",
    "ProductAnswer",
    "RunData",
    "RunFolderError",
    "SideMetrics",
    "compare_runs",
    "compare_runs_cli",
    "load_run",
    "print_comparisons",
    "to_markdown",
]

REQUIRED_FILES = ("outputs/classifications.csv", "metadata/run_summary.json", "outputs/token_usage.json")
"""Files `compare` reads from each run folder."""
REQUIRED_COLUMNS = ("product_id", "category", "subcategory", "valid")
"""Columns classifications.csv must have."""
INVALID = "(invalid)"
MISSING = "(missing)"
_TERMINAL_CHANGED_ROWS = 30


class RunFolderError(ConfigError):
    """A path given to `assay compare` is not a usable run folder."""


@dataclass(frozen=True)
class ProductAnswer:
    """One product's answer in one run (one model, first repeat)."""

    product_id: str
    title: str
    label: str | None
    """'category/subcategory' when the answer is valid, else None."""
    status: str
    """'ok', 'invalid' or 'missing'."""
    gold: str | None
    """'category/subcategory' from the gold columns, None when the product has no gold label."""

    @property
    def shown(self) -> str:
        """The label, or (invalid) / (missing)."""
        return self.label or (MISSING if self.status == "missing" else INVALID)


@dataclass(frozen=True)
class RunData:
    """What `compare` reads from one run folder."""

    folder: Path
    summary: dict[str, Any]
    usage: dict[str, Any]
    answers: dict[str, dict[str, ProductAnswer]]
    """Model alias -> product_id -> answer (repeat 0)."""
    notes: tuple[str, ...] = ()

    @property
    def products(self) -> int:
        """Distinct products in classifications.csv."""
        return len({pid for by_product in self.answers.values() for pid in by_product})


@dataclass(frozen=True)
class SideMetrics:
    """Metrics of one run over the matched products."""

    products: int
    valid: int
    labelled: int
    """Matched products with a gold label (the accuracy denominator)."""
    category_accuracy: Interval | None
    subcategory_accuracy: Interval | None

    @property
    def validity(self) -> Interval | None:
        """valid / products with a Wilson interval."""
        return wilson_interval(self.valid, self.products) if self.products else None


@dataclass(frozen=True)
class ChangedAnswer:
    """A product whose answer differs between the runs."""

    product_id: str
    title: str
    a: str
    b: str
    gold: str


@dataclass(frozen=True)
class CostSide:
    """Tokens and cost of a whole run (outputs/token_usage.json)."""

    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    products: int

    @property
    def usd_per_product(self) -> float:
        """cost_usd / products (0 when there are none)."""
        return self.cost_usd / self.products if self.products else 0.0


@dataclass(frozen=True)
class Comparison:
    """Run A's model `alias_a` against run B's model `alias_b` on the products both classified."""

    run_a: Path
    run_b: Path
    alias_a: str
    alias_b: str
    matched: int
    only_a: int
    only_b: int
    metrics_a: SideMetrics
    metrics_b: SideMetrics
    mcnemar_category: McNemarResult | None
    mcnemar_subcategory: McNemarResult | None
    mcnemar_n: int
    """Products both runs answered validly and that have a gold label (the McNemar sample)."""
    agreement: int
    """Matched products with the same answer (validity included) in both runs."""
    changed: list[ChangedAnswer]
    cost_a: CostSide
    cost_b: CostSide
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------------
# Loading


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RunFolderError(
            f"{path}: not valid JSON ({exc}); the run folder is damaged, re-run the experiment"
        ) from None
    if not isinstance(value, dict):
        raise RunFolderError(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value


def _truthy(value: str | None) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes")


def load_run(folder: Path) -> RunData:
    """Read one run folder; RunFolderError names the missing file or column and what a run folder holds."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RunFolderError(
            f"{folder} is not a directory; pass a run folder such as runs/assign-cat-YYYY-MM-DD-HHMMSS "
            "(printed as 'run folder:' at the end of assay run)"
        )
    for name in REQUIRED_FILES:
        if not (folder / name).is_file():
            raise RunFolderError(
                f"{folder} is not an assign-cat run folder: {name} is missing (a run folder has "
                f"{', '.join(REQUIRED_FILES)}); pass a folder written by assay run assign-cat"
            )
    summary = _read_json(folder / "metadata/run_summary.json")
    usage = _read_json(folder / "outputs/token_usage.json")
    csv_path = folder / "outputs/classifications.csv"
    answers: dict[str, dict[str, ProductAnswer]] = {}
    repeats: set[int] = set()
    with csv_path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in REQUIRED_COLUMNS if column not in (reader.fieldnames or [])]
        if missing:
            raise RunFolderError(
                f"{csv_path}: missing column(s) {', '.join(missing)} (columns found: "
                f"{', '.join(reader.fieldnames or [])}); compare reads assign-cat classifications"
            )
        default_alias = ",".join(summary.get("models") or []) or "model"
        for row in reader:
            repeat = int(row.get("repeat") or 0)
            repeats.add(repeat)
            if repeat != 0:
                continue
            valid = _truthy(row.get("valid"))
            status = row.get("status") or ("ok" if valid else "invalid")
            label = f"{row['category']}/{row['subcategory']}" if valid and row.get("category") else None
            gold_category, gold_subcategory = row.get("gold_category") or "", row.get("gold_subcategory") or ""
            gold = f"{gold_category}/{gold_subcategory}" if gold_category and gold_subcategory else None
            alias = row.get("alias") or default_alias
            answers.setdefault(alias, {})[row["product_id"]] = ProductAnswer(
                row["product_id"], row.get("title", ""), label, status, gold
            )
    notes = []
    if len(repeats) > 1:
        notes.append(f"{folder.name} has {len(repeats)} repeats per product; only repeat 0 is compared")
    return RunData(folder, summary, usage, answers, tuple(notes))


# ---------------------------------------------------------------------------------------------------------
# Comparing


def _cost(run: RunData) -> CostSide:
    usage = run.usage
    return CostSide(
        calls=int(usage.get("calls", 0)),
        prompt_tokens=int(usage.get("prompt_tokens", 0)),
        completion_tokens=int(usage.get("completion_tokens", 0)),
        cost_usd=float(usage.get("cost_usd", 0.0)),
        products=run.products,
    )


def _side_metrics(answers: Sequence[ProductAnswer], gold: Mapping[str, str | None]) -> SideMetrics:
    labelled = [answer for answer in answers if gold.get(answer.product_id)]
    category = sum(
        1
        for answer in labelled
        if answer.label and answer.label.split("/", 1)[0] == str(gold[answer.product_id]).split("/", 1)[0]
    )
    subcategory = sum(1 for answer in labelled if answer.label and answer.label == gold[answer.product_id])
    n = len(labelled)
    return SideMetrics(
        products=len(answers),
        valid=sum(1 for answer in answers if answer.label is not None),
        labelled=n,
        category_accuracy=wilson_interval(category, n) if n else None,
        subcategory_accuracy=wilson_interval(subcategory, n) if n else None,
    )


def _alias_pairs(run_a: RunData, run_b: RunData) -> list[tuple[str, str]]:
    if len(run_a.answers) == 1 and len(run_b.answers) == 1:
        return [(next(iter(run_a.answers)), next(iter(run_b.answers)))]
    shared = sorted(set(run_a.answers) & set(run_b.answers))
    if not shared:
        raise RunFolderError(
            f"{run_a.folder.name} has models {', '.join(sorted(run_a.answers)) or '(none)'} and {run_b.folder.name} "
            f"has {', '.join(sorted(run_b.answers)) or '(none)'}: with several models per run, compare needs a model "
            "both runs share; compare single-model runs instead (assay run assign-cat --model <alias>)"
        )
    return [(alias, alias) for alias in shared]


def _compare_pair(run_a: RunData, run_b: RunData, alias_a: str, alias_b: str) -> Comparison:
    answers_a, answers_b = run_a.answers[alias_a], run_b.answers[alias_b]
    matched_ids = [pid for pid in answers_a if pid in answers_b]
    notes = [*run_a.notes, *run_b.notes]
    gold: dict[str, str | None] = {}
    disagreements = 0
    for pid in matched_ids:
        gold_a, gold_b = answers_a[pid].gold, answers_b[pid].gold
        if gold_a and gold_b and gold_a != gold_b:
            disagreements += 1
        gold[pid] = gold_a or gold_b
    if disagreements:
        notes.append(f"{disagreements} products have different gold labels in the two runs; run A's are used")
    side_a = [answers_a[pid] for pid in matched_ids]
    side_b = [answers_b[pid] for pid in matched_ids]
    both = [pid for pid in matched_ids if answers_a[pid].label and answers_b[pid].label and gold.get(pid)]
    mcnemar_category = mcnemar_subcategory = None
    if both:
        mcnemar_subcategory = mcnemar_test(
            [answers_a[pid].label == gold[pid] for pid in both], [answers_b[pid].label == gold[pid] for pid in both]
        )
        mcnemar_category = mcnemar_test(
            [_category(answers_a[pid].label) == _category(gold[pid]) for pid in both],
            [_category(answers_b[pid].label) == _category(gold[pid]) for pid in both],
        )
    changed = [
        ChangedAnswer(
            pid,
            answers_a[pid].title or answers_b[pid].title,
            answers_a[pid].shown,
            answers_b[pid].shown,
            gold.get(pid) or "",
        )
        for pid in matched_ids
        if answers_a[pid].shown != answers_b[pid].shown
    ]
    if not matched_ids:
        notes.append("the runs share no product_id: nothing to compare product by product")
    return Comparison(
        run_a=run_a.folder,
        run_b=run_b.folder,
        alias_a=alias_a,
        alias_b=alias_b,
        matched=len(matched_ids),
        only_a=sum(1 for pid in answers_a if pid not in answers_b),
        only_b=sum(1 for pid in answers_b if pid not in answers_a),
        metrics_a=_side_metrics(side_a, gold),
        metrics_b=_side_metrics(side_b, gold),
        mcnemar_category=mcnemar_category,
        mcnemar_subcategory=mcnemar_subcategory,
        mcnemar_n=len(both),
        agreement=len(matched_ids) - len(changed),
        changed=changed,
        cost_a=_cost(run_a),
        cost_b=_cost(run_b),
        notes=notes,
    )


def _category(label: str | None) -> str | None:
    return label.split("/", 1)[0] if label else None


def compare_runs(run_a: Path, run_b: Path) -> list[Comparison]:
    """Compare two run folders: one Comparison per model pair (see the module docstring)."""
    data_a, data_b = load_run(run_a), load_run(run_b)
    return [_compare_pair(data_a, data_b, alias_a, alias_b) for alias_a, alias_b in _alias_pairs(data_a, data_b)]


# ---------------------------------------------------------------------------------------------------------
# Rendering


def _pct(interval: Interval | None) -> str:
    return "n/a" if interval is None else f"{interval.estimate:.1%} [{interval.low:.1%}, {interval.high:.1%}]"


def _delta(a: Interval | None, b: Interval | None) -> str:
    return "n/a" if a is None or b is None else f"{(b.estimate - a.estimate) * 100:+.1f} pp"


def _metric_rows(comparison: Comparison) -> list[tuple[str, str, str, str]]:
    a, b = comparison.metrics_a, comparison.metrics_b
    return [
        ("products compared", str(a.products), str(b.products), ""),
        ("valid answers", _pct(a.validity), _pct(b.validity), _delta(a.validity, b.validity)),
        (
            "category accuracy",
            _pct(a.category_accuracy),
            _pct(b.category_accuracy),
            _delta(a.category_accuracy, b.category_accuracy),
        ),
        (
            "subcategory accuracy",
            _pct(a.subcategory_accuracy),
            _pct(b.subcategory_accuracy),
            _delta(a.subcategory_accuracy, b.subcategory_accuracy),
        ),
    ]


def _cost_rows(comparison: Comparison) -> list[tuple[str, str, str, str]]:
    a, b = comparison.cost_a, comparison.cost_b
    return [
        ("calls", str(a.calls), str(b.calls), f"{b.calls - a.calls:+d}"),
        ("prompt tokens", str(a.prompt_tokens), str(b.prompt_tokens), f"{b.prompt_tokens - a.prompt_tokens:+d}"),
        (
            "completion tokens",
            str(a.completion_tokens),
            str(b.completion_tokens),
            f"{b.completion_tokens - a.completion_tokens:+d}",
        ),
        ("cost (USD)", f"{a.cost_usd:.6f}", f"{b.cost_usd:.6f}", f"{b.cost_usd - a.cost_usd:+.6f}"),
        (
            "cost per product (USD)",
            f"{a.usd_per_product:.6f}",
            f"{b.usd_per_product:.6f}",
            f"{b.usd_per_product - a.usd_per_product:+.6f}",
        ),
    ]


def _mcnemar_lines(comparison: Comparison) -> list[str]:
    if comparison.mcnemar_subcategory is None or comparison.mcnemar_category is None:
        return ["McNemar's test: not possible (no product with a gold label was answered validly by both runs)."]
    lines = [f"McNemar's paired test on the {comparison.mcnemar_n} products both runs answered validly (with gold):"]
    for level, result in (("category", comparison.mcnemar_category), ("subcategory", comparison.mcnemar_subcategory)):
        lines.append(
            f"- {level}: A right / B wrong = {result.b}, A wrong / B right = {result.c}, "
            f"p = {result.p_value:.4g} ({result.method})"
        )
    return lines


def _heading(comparison: Comparison) -> str:
    return (
        f"A = {comparison.run_a.name} ({comparison.alias_a}), B = {comparison.run_b.name} ({comparison.alias_b}): "
        f"{comparison.matched} products in both, {comparison.only_a} only in A, {comparison.only_b} only in B, "
        f"{comparison.agreement} with the same answer"
    )


def to_markdown(comparisons: Sequence[Comparison]) -> str:
    """The comparison as Markdown (what compare.md holds)."""
    lines = ["# Run comparison", ""]
    for comparison in comparisons:
        lines += [f"## {comparison.alias_a} vs {comparison.alias_b}", "", _heading(comparison), ""]
        lines += ["| metric | A | B | B - A |", "|---|---|---|---|"]
        lines += [f"| {m} | {a} | {b} | {d} |" for m, a, b, d in _metric_rows(comparison)]
        lines += ["", "Accuracy counts invalid answers as wrong; brackets are Wilson 95% intervals.", ""]
        lines += [*_mcnemar_lines(comparison), ""]
        lines += ["### Cost (whole runs)", "", "| | A | B | B - A |", "|---|---|---|---|"]
        lines += [f"| {m} | {a} | {b} | {d} |" for m, a, b, d in _cost_rows(comparison)]
        lines += ["", f"### Changed answers ({len(comparison.changed)})", ""]
        if comparison.changed:
            lines += ["| product_id | title | A | B | gold |", "|---|---|---|---|---|"]
            for change in comparison.changed:
                title = change.title.replace("|", "/")
                lines.append(f"| {change.product_id} | {title} | {change.a} | {change.b} | {change.gold} |")
        else:
            lines.append("No product changed its answer.")
        lines.append("")
        if comparison.notes:
            lines += ["Notes:", *(f"- {note}" for note in comparison.notes), ""]
    return "\n".join(lines)


def print_comparisons(comparisons: Sequence[Comparison], console: Any = None) -> None:
    """Print the comparison as terminal tables (rich)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    for comparison in comparisons:
        console.print(f"[bold]{comparison.alias_a} vs {comparison.alias_b}[/bold]")
        console.print(_heading(comparison))
        for title, rows in (("metrics", _metric_rows(comparison)), ("cost (whole runs)", _cost_rows(comparison))):
            table = Table(title=title)
            for column in ("", "A", "B", "B - A"):
                table.add_column(column)
            for row in rows:
                table.add_row(*row)
            console.print(table)
        for line in _mcnemar_lines(comparison):
            console.print(line)
        if comparison.changed:
            table = Table(title=f"changed answers ({len(comparison.changed)})")
            for column in ("product_id", "title", "A", "B", "gold"):
                table.add_column(column)
            for change in comparison.changed[:_TERMINAL_CHANGED_ROWS]:
                table.add_row(change.product_id, change.title, change.a, change.b, change.gold)
            console.print(table)
            if len(comparison.changed) > _TERMINAL_CHANGED_ROWS:
                console.print(f"... {len(comparison.changed) - _TERMINAL_CHANGED_ROWS} more in the Markdown file")
        else:
            console.print("No product changed its answer.")
        for note in comparison.notes:
            console.print(f"note: {note}")


def compare_runs_cli(run_a: Path, run_b: Path, output: Path | None = None) -> int:
    """`assay compare`: print the comparison and write it as Markdown (default <run_b>/outputs/compare.md)."""
    comparisons = compare_runs(run_a, run_b)
    print_comparisons(comparisons)
    target = output or Path(run_b) / "outputs" / "compare.md"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(to_markdown(comparisons), encoding="utf-8")
    print(f"wrote {target}")
    return 0
