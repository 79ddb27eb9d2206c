"""`assay compare`: two run folders (written here by hand, in the layout `assay run assign-cat` writes) compared.

The end-to-end comparison of two real runs is in tests/test_assign_cat.py::test_compare_two_runs.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from jobs.cli import main
from pipeline.report.compare import RunFolderError, compare_runs, compare_runs_cli, load_run, to_markdown

COLUMNS = [
    "product_id",
    "title",
    "category",
    "subcategory",
    "valid",
    "raw_response",
    "model_used",
    "gold_category",
    "gold_subcategory",
    "status",
    "reason",
    "alias",
    "repeat",
]
GOLD = {
    "P1": "immune-support/daily-immune",
    "P2": "sleep-relaxation/melatonin-sleep",
    "P3": "heart-cardio/cholesterol-support",
    "P4": "joint-bone/glucosamine-chondroitin",
}


def make_run(
    folder: Path,
    answers: dict[str, str | None],
    *,
    alias: str = "fake",
    cost: float = 0.01,
    calls: int | None = None,
    gold: dict[str, str] | None = None,
    repeat: int = 0,
) -> Path:
    """A run folder whose classifications.csv holds `answers` (product_id -> 'cat/sub', None = invalid)."""
    gold = GOLD if gold is None else gold
    for sub in ("inputs", "config", "outputs", "metadata"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for product_id, label in answers.items():
        category, _, subcategory = (label or "").partition("/")
        gold_category, _, gold_subcategory = gold.get(product_id, "").partition("/")
        rows.append(
            {
                "product_id": product_id,
                "title": f"Product {product_id}",
                "category": category,
                "subcategory": subcategory,
                "valid": label is not None,
                "raw_response": json.dumps({"category": category, "subcategory": subcategory}),
                "model_used": "openai/fake-model",
                "gold_category": gold_category,
                "gold_subcategory": gold_subcategory,
                "status": "ok" if label else "invalid",
                "reason": "" if label else "after repair: no JSON object found",
                "alias": alias,
                "repeat": repeat,
            }
        )
    with (folder / "outputs" / "classifications.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    usage = {
        "calls": calls or len(answers),
        "prompt_tokens": 2600 * len(answers),
        "completion_tokens": 20 * len(answers),
    }
    (folder / "outputs" / "token_usage.json").write_text(json.dumps({**usage, "cost_usd": cost, "by_model": {}}))
    (folder / "metadata" / "run_summary.json").write_text(json.dumps({"experiment": "assign-cat", "models": [alias]}))
    return folder


def test_metrics_mcnemar_changed_answers_and_cost(tmp_path: Path) -> None:
    run_a = make_run(tmp_path / "a", {pid: GOLD[pid] for pid in GOLD}, cost=0.04)
    run_b = make_run(
        tmp_path / "b",
        {
            "P1": GOLD["P1"],
            "P2": "sleep-relaxation/herbal-sleep",  # right category, wrong subcategory
            "P3": "immune-support/daily-immune",  # wrong at both levels
            "P4": None,  # invalid
            "P5": "immune-support/cold-season",  # only in B, no gold
        },
        alias="haiku",
        cost=0.01,
        calls=1,
    )
    [comparison] = compare_runs(run_a, run_b)
    assert (comparison.alias_a, comparison.alias_b) == ("fake", "haiku")
    assert (comparison.matched, comparison.only_a, comparison.only_b) == (4, 0, 1)
    assert comparison.metrics_a.subcategory_accuracy is not None
    assert comparison.metrics_a.subcategory_accuracy.estimate == 1.0
    assert comparison.metrics_b.category_accuracy is not None and comparison.metrics_b.subcategory_accuracy is not None
    assert comparison.metrics_b.category_accuracy.estimate == 0.5  # P1, P2
    assert comparison.metrics_b.subcategory_accuracy.estimate == 0.25  # P1
    assert comparison.metrics_b.valid == 3
    # McNemar on the 3 products both answered validly: A right and B wrong on P2 and P3 (subcategory).
    assert comparison.mcnemar_n == 3
    assert comparison.mcnemar_subcategory is not None and comparison.mcnemar_category is not None
    assert (comparison.mcnemar_subcategory.b, comparison.mcnemar_subcategory.c) == (2, 0)
    assert (comparison.mcnemar_category.b, comparison.mcnemar_category.c) == (1, 0)
    assert [(c.product_id, c.a, c.b) for c in comparison.changed] == [
        ("P2", GOLD["P2"], "sleep-relaxation/herbal-sleep"),
        ("P3", GOLD["P3"], "immune-support/daily-immune"),
        ("P4", GOLD["P4"], "(invalid)"),
    ]
    assert comparison.agreement == 1
    assert comparison.cost_a.usd_per_product == pytest.approx(0.01)
    assert comparison.cost_b.usd_per_product == pytest.approx(0.002)

    markdown = to_markdown([comparison])
    assert "| category accuracy | 100.0% [51.0%, 100.0%] | 50.0% [15.0%, 85.0%] | -50.0 pp |" in markdown
    assert "| subcategory accuracy | 100.0% [51.0%, 100.0%] | 25.0% [4.6%, 69.9%] | -75.0 pp |" in markdown
    assert "- subcategory: A right / B wrong = 2, A wrong / B right = 0, p = 0.5 (exact)" in markdown
    assert "| cost (USD) | 0.040000 | 0.010000 | -0.030000 |" in markdown
    assert "| calls | 4 | 1 | -3 |" in markdown
    assert (
        "| P4 | Product P4 | joint-bone/glucosamine-chondroitin | (invalid) | joint-bone/glucosamine-chondroitin |"
        in (markdown)
    )


def test_cli_prints_tables_and_writes_markdown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_a = make_run(tmp_path / "a", {pid: GOLD[pid] for pid in GOLD})
    run_b = make_run(tmp_path / "b", {**{pid: GOLD[pid] for pid in GOLD}, "P2": None})
    assert main(["compare", str(run_a), str(run_b)]) == 0
    printed = capsys.readouterr().out
    assert "fake vs fake" in printed and "changed answers (1)" in printed and "subcategory accuracy" in printed
    written = run_b / "outputs" / "compare.md"
    assert f"wrote {written}" in printed
    assert written.read_text().startswith("# Run comparison")
    out = tmp_path / "reports" / "ab.md"
    assert compare_runs_cli(run_a, run_b, out) == 0
    assert out.read_text() == written.read_text()


def test_without_gold_there_is_no_accuracy_and_no_mcnemar(tmp_path: Path) -> None:
    run_a = make_run(tmp_path / "a", {"P1": GOLD["P1"], "P2": GOLD["P2"]}, gold={})
    run_b = make_run(tmp_path / "b", {"P1": GOLD["P1"], "P2": GOLD["P3"]}, gold={})
    [comparison] = compare_runs(run_a, run_b)
    assert comparison.metrics_a.category_accuracy is None and comparison.mcnemar_subcategory is None
    markdown = to_markdown([comparison])
    assert "| category accuracy | n/a | n/a | n/a |" in markdown
    assert "McNemar's test: not possible" in markdown
    assert "| P2 | Product P2 | sleep-relaxation/melatonin-sleep | heart-cardio/cholesterol-support |  |" in markdown


def test_several_models_are_compared_model_by_model(tmp_path: Path) -> None:
    run_a = make_run(tmp_path / "a", {"P1": GOLD["P1"]}, alias="fake")
    run_b = make_run(tmp_path / "b", {"P1": GOLD["P2"]}, alias="fake")
    # A second model in each run: append its rows.
    for folder, label in ((run_a, GOLD["P1"]), (run_b, GOLD["P1"])):
        with (folder / "outputs" / "classifications.csv").open("a", newline="", encoding="utf-8") as handle:
            category, subcategory = label.split("/")
            gold_category, gold_subcategory = GOLD["P1"].split("/")
            csv.writer(handle).writerow(
                ["P1", "Product P1", category, subcategory, True, "{}", "m", gold_category, gold_subcategory, "ok", "",
                 "haiku", 0]
            )  # fmt: skip
    comparisons = compare_runs(run_a, run_b)
    assert [(c.alias_a, c.alias_b, len(c.changed)) for c in comparisons] == [("fake", "fake", 1), ("haiku", "haiku", 0)]
    lonely = make_run(tmp_path / "c", {"P1": GOLD["P1"]}, alias="gpt4o")
    with pytest.raises(RunFolderError, match="needs a model both runs share"):
        compare_runs(run_a, lonely)


def test_only_repeat_zero_is_compared(tmp_path: Path) -> None:
    run = make_run(tmp_path / "a", {"P1": GOLD["P1"]})
    with (run / "outputs" / "classifications.csv").open("a", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerow(["P1", "t", "x", "y", True, "", "m", "", "", "ok", "", "fake", 1])
    data = load_run(run)
    assert data.answers["fake"]["P1"].label == GOLD["P1"]
    assert data.notes and "only repeat 0" in data.notes[0]


def test_errors_name_the_missing_file_or_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = make_run(tmp_path / "good", {"P1": GOLD["P1"]})
    with pytest.raises(RunFolderError, match="is not a directory"):
        load_run(tmp_path / "nowhere")
    for missing in ("metadata/run_summary.json", "outputs/token_usage.json", "outputs/classifications.csv"):
        broken = make_run(tmp_path / missing.replace("/", "_"), {"P1": GOLD["P1"]})
        (broken / missing).unlink()
        with pytest.raises(RunFolderError, match=f"{missing} is missing"):
            load_run(broken)
    # Through the command: exit code 2 and the message on stderr.
    assert main(["compare", str(good), str(tmp_path / "metadata_run_summary.json")]) == 2
    assert "metadata/run_summary.json is missing" in capsys.readouterr().err

    no_column = make_run(tmp_path / "no_column", {"P1": GOLD["P1"]})
    csv_path = no_column / "outputs" / "classifications.csv"
    csv_path.write_text("product_id,title,category\nP1,t,immune-support\n")
    with pytest.raises(RunFolderError, match="missing column\\(s\\) subcategory, valid"):
        load_run(no_column)
    (good / "outputs" / "token_usage.json").write_text("{not json")
    with pytest.raises(RunFolderError, match="not valid JSON"):
        load_run(good)
