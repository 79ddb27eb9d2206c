"""Input checks with Great Expectations: each expectation's observed value, and a failing suite stops the run
before any call is paid for."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from jobs.cli import main
from pipeline.data.expectations import validate_items, validate_snapshot
from pipeline.data.loaders import Item
from tests.fakes.openai_server import FakeOpenAIServer

LABELS = ["sports", "cooking"]


def test_a_clean_snapshot_passes_and_each_expectation_reports_what_it_saw() -> None:
    items = [Item("a", {"text": "goal!"}, "sports"), Item("b", {"text": "whisk"}, "cooking")]
    validation = validate_items(items, labels=LABELS)
    assert validation.success
    by_name = {(o.expectation, o.column): o for o in validation.outcomes}
    assert by_name[("expect_table_row_count_to_be_between", None)].observed == 2
    assert by_name[("expect_column_values_to_be_unique", "item_id")].unexpected_count == 0


@pytest.mark.parametrize(
    ("items", "failing"),
    [
        ([Item("a", {"text": "x"}), Item("a", {"text": "y"})], "expect_column_values_to_be_unique"),
        ([Item("a", {"text": "x"}), Item("b", {"text": "   "})], "expect_column_value_lengths_to_be_between"),
        (
            [Item("a", {"text": "x"}, "sports"), Item("b", {"text": "y"}, "astronomy")],
            "expect_column_values_to_be_in_set",
        ),
        ([], "expect_table_row_count_to_be_between"),
    ],
    ids=["duplicate id", "blank text", "label not allowed", "no rows"],
)
def test_each_expectation_fails_on_the_input_it_guards_against(items: list[Item], failing: str) -> None:
    validation = validate_items(items, labels=LABELS)
    assert not validation.success
    assert failing in [o.expectation for o in validation.outcomes if not o.success]
    if items:  # with no rows only the row count is meaningful (GX cannot type an empty column)
        assert [o.expectation for o in validation.outcomes if not o.success] == [failing]


def test_an_unchanged_snapshot_is_validated_once(tmp_path: Path) -> None:
    items = [Item("a", {"text": "x"})]
    first = validate_snapshot(tmp_path, items, "ab" * 32)
    assert (tmp_path / "input_validation.json").exists()
    assert validate_snapshot(tmp_path, [Item("a", {"text": "x"}), Item("a", {"text": "x"})], "ab" * 32) == first
    assert not validate_snapshot(tmp_path, [Item("a", {"text": "x"}), Item("a", {"text": "x"})], "cd" * 32).success


@pytest.mark.slow
def test_a_failing_input_check_stops_the_run_before_any_call(
    assay_env: Path, fake_server: FakeOpenAIServer, capsys: pytest.CaptureFixture[str]
) -> None:
    path = assay_env / "items.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerows([["id", "text", "topic"], ["a", "A striker scored.", "sports"], ["b", "Stars.", "astronomy"]])
    assert main(["run", "hello", "--model", "fake", "--input", str(path)]) == 2
    err = capsys.readouterr().err
    assert "input check failed: expect_column_values_to_be_in_set[gold]" in err
    assert fake_server.total() == 0
