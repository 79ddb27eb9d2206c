"""Gold sets and task specs: loading with one-line errors, and scoring answers overall and per tag."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from pipeline.config import REPO_ROOT, load_experiment
from pipeline.evaluation.gold import (
    ALL_ITEMS,
    GoldEvaluation,
    GoldItem,
    evaluate_answers,
    load_gold_jsonl,
    load_gold_set,
    write_gold_jsonl,
)
from pipeline.llm.errors import ConfigError

ITEMS = [
    GoldItem("h1", "The striker scored twice.", "sports", ("short",)),
    GoldItem("h2", {"title": "Whisk", "text": "Whisk the eggs."}, "cooking", ("short", "recipe")),
    GoldItem("h3", "Rain tomorrow.", "weather"),
    GoldItem("h4", "Kernel panic.", "computing"),
]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gold.jsonl"
    path.write_text(text, encoding="utf-8")
    return path


def test_gold_jsonl_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "gold.jsonl"
    write_gold_jsonl(path, ITEMS)
    assert load_gold_jsonl(path) == tuple(ITEMS)


def test_gold_set_with_task_spec(tmp_path: Path) -> None:
    folder = tmp_path / "topics"
    folder.mkdir()
    write_gold_jsonl(folder / "gold.jsonl", ITEMS)
    (folder / "task.md").write_text("# Topic of a short text\n\nOne of four topics.\n", encoding="utf-8")
    gold = load_gold_set("topics", datasets_dir=tmp_path)
    assert gold.task is not None and gold.task.title == "Topic of a short text"
    assert gold.tags() == ["recipe", "short"]
    assert len(gold.items) == 4


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"id": "a", "input": "x", "expected": 1}\n{"id": "b", "input": "y"\n', r"gold.jsonl:2: not valid JSON"),
        ('{"id": "a", "input": "x"}\n', r"gold.jsonl:1: key 'expected' is missing"),
        ('{"id": "a", "input": "x", "expected": 1, "tag": ["t"]}\n', r"gold.jsonl:1: unknown key 'tag'"),
        ('{"id": "a", "input": "", "expected": 1}\n', r"gold.jsonl:1: input must be a non-empty string"),
        ('{"id": "a", "input": "x", "expected": 1, "tags": "t"}\n', r"gold.jsonl:1: tags must be a list"),
        (
            '\n{"id": "a", "input": "x", "expected": 1}\n{"id": "a", "input": "y", "expected": 2}\n',
            r"gold.jsonl:3: duplicate id 'a' \(first on line 2\)",
        ),
        ("[1, 2]\n", r"gold.jsonl:1: expected a JSON object"),
        ('{"id": "a", "input": "x", "expected": null}\n', r"gold.jsonl:1: expected is null \(item a\)"),
        ("\n\n", r"the gold set is empty"),
    ],
)
def test_bad_gold_lines_name_file_line_and_fix(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load_gold_jsonl(_write(tmp_path, text))
    assert "\n" not in str(caught.value)


def test_missing_files_say_what_to_write(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found; write one JSON object per line"):
        load_gold_set("nothing", datasets_dir=tmp_path)


def test_accuracy_overall_and_per_tag_with_wilson_intervals() -> None:
    answers = {"h1": " Sports", "h2": "baking", "h3": "weather", "h4": None, "zz": "sports"}
    result = evaluate_answers(ITEMS, answers)
    overall = result.overall
    assert (overall.group, overall.n, overall.correct, overall.answered) == (ALL_ITEMS, 4, 2, 3)
    assert overall.accuracy.estimate == 0.5 and overall.accuracy.method == "wilson"
    # Wilson 95% interval of 2/4 (Newcombe 1998, method 3): 0.1500 to 0.8500.
    assert (round(overall.accuracy.low, 4), round(overall.accuracy.high, 4)) == (0.1500, 0.8500)
    by_tag = {g.group: g for g in result.per_tag}
    assert (by_tag["short"].n, by_tag["short"].correct) == (2, 1)
    assert (by_tag["recipe"].n, by_tag["recipe"].correct) == (1, 0)
    assert result.unknown_answer_ids == ("zz",)
    assert overall.mae is None  # labels, not numbers


def test_mae_with_a_bootstrap_interval_for_numeric_answers() -> None:
    items = [GoldItem(f"n{i}", f"q{i}", float(i), ("even",) if i % 2 == 0 else ()) for i in range(6)]
    answers = {"n0": 1, "n1": 1, "n2": 4.0, "n3": 3, "n4": "four", "n5": 5.5}
    result = evaluate_answers(items, answers, n_resamples=500)
    mae = result.overall.mae
    assert mae is not None
    # Errors of the numeric answers: 1, 0, 2, 0, 0.5 (the answer "four" is not a number: wrong, no error).
    assert mae.estimate == pytest.approx(3.5 / 5)
    assert mae.low <= mae.estimate <= mae.high and mae.method == "bootstrap-percentile"
    assert result.overall.correct == 2  # 1 == 1.0 and 3 == 3.0
    even = next(g for g in result.per_tag if g.group == "even")
    assert even.mae is not None and even.mae.estimate == pytest.approx(1.5)


def test_evaluation_round_trips_through_json() -> None:
    items = [GoldItem(f"n{i}", f"q{i}", i, ("t",)) for i in range(4)]
    result = evaluate_answers(items, {"n0": 0, "n1": 2, "n2": 2, "n3": None}, n_resamples=200)
    assert GoldEvaluation.from_json(result.to_json()) == result


def test_shipped_gold_sets_load_and_agree_with_their_sources() -> None:
    hello = load_gold_set("hello")
    assert hello.task is not None and hello.task.title == "Topic of a short text"
    inline = {item["id"]: item["topic"] for item in load_experiment("hello", environ={}).dataset.items}
    assert {item.id: item.expected for item in hello.items} == inline

    products = REPO_ROOT / "datasets" / "assign-cat" / "products.csv"
    with products.open(encoding="utf-8") as handle:
        rows = {row["product_id"]: row for row in csv.DictReader(handle)}
    assign_cat = load_gold_set("assign-cat")
    assert assign_cat.task is not None
    assert {item.id: item.expected for item in assign_cat.items} == {
        key: {"category": row["gold_category"], "subcategory": row["gold_subcategory"]} for key, row in rows.items()
    }
