"""Bad input files give one clear ConfigError line (file, where, what to do), never a traceback from deep inside."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.config import DatasetConfig, load_experiment, load_model_zoo, read_yaml
from pipeline.data import loaders
from pipeline.data.loaders import load_item_set
from pipeline.llm.errors import ConfigError

SMALL_LIMIT = 256 * 1024  # the tests lower the limit so that a cell over it stays small to write
LATIN1_CSV = "id,text\nk1,plain\nk2,Café au lait\n".encode("latin-1")
LATIN1_YAML = "models:\n  fake:\n    model: openai/caf\xe9\n".encode("latin-1")
LATIN1_JSONL = b'{"id": "k1", "text": "caf\xe9"}\n'
LATIN1_EXPERIMENT = b"name: exp\nprompts: {user: 'caf\xe9 {text}'}\n"


def offset(data: bytes) -> str:
    """The message fragment naming where the first non-UTF-8 byte (0xe9 here) is."""
    return f"byte offset {data.index(0xE9)}"


@dataclass(frozen=True)
class Case:
    """One bad file: its name, bytes, how it is loaded, and the fragments its error must contain."""

    name: str
    content: bytes
    load: Callable[[Path], object]
    fragments: tuple[str, ...]


def _csv(path: Path) -> object:
    return load_item_set(DatasetConfig(loader="csv", path=str(path)))


def _jsonl(path: Path) -> object:
    return load_item_set(DatasetConfig(loader="jsonl", path=str(path)))


def _huge_cell_csv() -> bytes:
    # An unclosed quote on row 3 swallows everything after it into one cell larger than the field limit.
    return b'id,text\nk1,fine\nk2,"unclosed\n' + b"x" * (SMALL_LIMIT + 10) + b"\n"


CASES = [
    Case("latin1.csv", LATIN1_CSV, _csv, ("latin1.csv", offset(LATIN1_CSV), "line 3", "0xe9", "UTF-8", "cp1252")),
    Case("latin1.jsonl", LATIN1_JSONL, _jsonl, ("latin1.jsonl", offset(LATIN1_JSONL), "line 1", "UTF-8")),
    Case("zoo.yaml", LATIN1_YAML, read_yaml, ("zoo.yaml", offset(LATIN1_YAML), "line 3", "UTF-8")),
    Case("zoo2.yaml", LATIN1_YAML, lambda path: load_model_zoo(path), ("zoo2.yaml", offset(LATIN1_YAML))),
    Case("exp.yaml", LATIN1_EXPERIMENT, load_experiment, ("exp.yaml", offset(LATIN1_EXPERIMENT), "line 2")),
    Case("huge.csv", _huge_cell_csv(), _csv, ("huge.csv", "row starting on line 3", "field limit", "never closed")),
]


@pytest.fixture(autouse=True)
def small_csv_limit(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The loader's field limit at 256 KiB for these tests; the csv module's setting restored after."""
    before = csv.field_size_limit()
    monkeypatch.setattr(loaders, "CSV_FIELD_LIMIT", SMALL_LIMIT)
    yield None
    csv.field_size_limit(before)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_one_clear_config_error(case: Case, tmp_path: Path) -> None:
    path = tmp_path / case.name
    path.write_bytes(case.content)
    with pytest.raises(ConfigError) as info:
        case.load(path)
    message = str(info.value)
    assert "\n" not in message, message
    for fragment in case.fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no chained traceback


def test_a_large_cell_under_the_limit_loads(tmp_path: Path) -> None:
    # Over the csv module's default, under ours: a long document is a valid item.
    path = tmp_path / "long.csv"
    long_text = "word " * 40_000  # 200 KB: over the csv default (128 KiB), under the limit
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["id", "text"], ["k1", long_text]])
    items = load_item_set(DatasetConfig(loader="csv", path=str(path))).items
    assert len(items) == 1 and items[0].fields["text"] == long_text


def test_a_utf8_file_with_a_byte_order_mark_loads(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes("\ufeffdefault: fake\nmodels: {fake: {model: openai/x}}\n".encode())
    assert read_yaml(path)["default"] == "fake"
