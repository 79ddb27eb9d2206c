"""The prompt-changelog gate: a changed prompt without an entry fails, an entry without a gold run fails, the
shipped experiments pass."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from pipeline.config import list_experiments
from pipeline.evaluation.prompt_versions import (
    ChangelogEntry,
    PromptChangelog,
    changelog_path,
    check_prompt_versions,
    current_prompt_version,
    load_changelog,
    write_changelog,
)
from pipeline.llm.errors import ConfigError

EXPERIMENT = """\
kind: classify
dataset: {loader: inline, items: [{id: a, text: hi, label: x}], gold_field: label}
prompts:
  user: "USER_TEXT {text}"
output: {labels: [x, y]}
"""


def _experiment(tmp_path: Path, user_text: str = "Label this:") -> Path:
    folder = tmp_path / "experiments"
    folder.mkdir(exist_ok=True)
    (folder / "toy.yaml").write_text(EXPERIMENT.replace("USER_TEXT", user_text), encoding="utf-8")
    return folder


def _log(tmp_path: Path, version: str, gold_run: str = "runs/toy-2026-12-01-101500") -> Path:
    folder = tmp_path / "changelog"
    entry = ChangelogEntry(version=version, date=dt.date(2026, 12, 1), author="ana", note="first", gold_run=gold_run)
    write_changelog(changelog_path("toy", folder), PromptChangelog(experiment="toy", entries=[entry]))
    return folder


def test_the_shipped_experiments_pass() -> None:
    assert list_experiments()  # the gate must look at something
    assert check_prompt_versions() == []


def test_version_with_entry_and_gold_run_passes(tmp_path: Path) -> None:
    experiments = _experiment(tmp_path)
    changelog = _log(tmp_path, current_prompt_version("toy", experiments))
    assert check_prompt_versions(["toy"], experiments_dir=experiments, changelog_dir=changelog) == []


def test_changed_prompt_without_entry_fails(tmp_path: Path) -> None:
    experiments = _experiment(tmp_path)
    changelog = _log(tmp_path, current_prompt_version("toy", experiments))
    _experiment(tmp_path, "Label this text, please:")  # the wording changes, the changelog does not
    new_version = current_prompt_version("toy", experiments)
    (problem,) = check_prompt_versions(["toy"], experiments_dir=experiments, changelog_dir=changelog)
    assert problem.experiment == "toy" and problem.version == new_version
    assert f"the current prompt version {new_version} has no entry in" in problem.message
    assert f"add to entries: {{version: {new_version}, date:" in problem.message


def test_entry_without_gold_run_fails(tmp_path: Path) -> None:
    experiments = _experiment(tmp_path)
    version = current_prompt_version("toy", experiments)
    changelog = _log(tmp_path, version, gold_run="")
    (problem,) = check_prompt_versions(["toy"], experiments_dir=experiments, changelog_dir=changelog)
    assert f"prompt version {version}" in problem.message and "has no gold_run" in problem.message
    assert "set gold_run: <its run folder>" in problem.message


def test_missing_changelog_file_says_what_to_create(tmp_path: Path) -> None:
    experiments = _experiment(tmp_path)
    (problem,) = check_prompt_versions(["toy"], experiments_dir=experiments, changelog_dir=tmp_path / "none")
    assert "has no changelog: create" in problem.message and "toy.yaml" in problem.message


def test_broken_changelog_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    experiments = _experiment(tmp_path)
    folder = tmp_path / "changelog"
    folder.mkdir()
    (folder / "toy.yaml").write_text("experiment: toy\nentries: [{version: nothex}]\n", encoding="utf-8")
    (problem,) = check_prompt_versions(["toy"], experiments_dir=experiments, changelog_dir=folder)
    assert "entries.0.version" in problem.message


def test_changelog_round_trip(tmp_path: Path) -> None:
    folder = _log(tmp_path, "0123456789ab")
    path = changelog_path("toy", folder)
    loaded = load_changelog(path)
    assert loaded.format_version == 1 and loaded.entry("0123456789ab") is not None
    write_changelog(path, loaded)
    assert load_changelog(path) == loaded


def test_all_digit_version_stays_text(tmp_path: Path) -> None:
    path = tmp_path / "toy.yaml"
    path.write_text(
        "format_version: 1\nexperiment: toy\nentries:\n"
        "- {version: 123456789012, date: 2026-12-01, author: a, note: n}\n",
        encoding="utf-8",
    )
    assert load_changelog(path).entries[0].version == "123456789012"


def test_duplicate_versions_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "toy.yaml"
    entry = "{version: 0123456789ab, date: 2026-12-01, author: a, note: n}"
    path.write_text(f"experiment: toy\nentries: [{entry}, {entry}]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="two entries"):
        load_changelog(path)
