"""The evaluation loop wired into experiments and the command line: the prompt gate, hard checks, judges,
traces, model comparison, canaries, perspectives.

End-to-end tests go through `jobs.cli.main([...])` to the fake OpenAI server over real HTTP on a temporary
SQLite Dagster instance (the `assay_env` fixture).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.cli import main

REPO = Path(__file__).resolve().parent.parent

TOY = """\
kind: classify
dataset: {loader: inline, items: [{id: a, text: hi, label: x}], gold_field: label}
prompts:
  user: "USER_TEXT {text}"
output: {labels: [x, y]}
"""


def test_prompt_check_passes_on_the_shipped_experiments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prompt", "check"]) == 0
    assert "every prompt version" in capsys.readouterr().out


def test_prompt_check_fails_with_one_line_per_changed_prompt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    experiments = tmp_path / "experiments"
    experiments.mkdir()
    for name in ("toy", "toy2"):
        (experiments / f"{name}.yaml").write_text(TOY.replace("USER_TEXT", f"Label {name}:"), encoding="utf-8")
    flags = ["--experiments-dir", str(experiments), "--changelog-dir", str(tmp_path / "changelog")]
    assert main(["prompt", "check", *flags]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all("has no changelog" in line for line in lines)


def test_prompt_check_fails_when_the_prompt_changes_after_its_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import datetime as dt

    from pipeline.evaluation.prompt_versions import (
        ChangelogEntry,
        PromptChangelog,
        changelog_path,
        current_prompt_version,
        write_changelog,
    )

    experiments = tmp_path / "experiments"
    experiments.mkdir()
    (experiments / "toy.yaml").write_text(TOY.replace("USER_TEXT", "Label:"), encoding="utf-8")
    version = current_prompt_version("toy", experiments)
    entry = ChangelogEntry(version=version, date=dt.date(2026, 12, 1), author="ana", note="first", gold_run="runs/x")
    write_changelog(changelog_path("toy", tmp_path / "log"), PromptChangelog(experiment="toy", entries=[entry]))
    flags = ["toy", "--experiments-dir", str(experiments), "--changelog-dir", str(tmp_path / "log")]
    assert main(["prompt", "check", *flags]) == 0
    (experiments / "toy.yaml").write_text(TOY.replace("USER_TEXT", "Label this, please:"), encoding="utf-8")
    capsys.readouterr()
    assert main(["prompt", "check", *flags]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "has no entry" in line
