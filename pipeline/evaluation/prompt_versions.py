"""The prompt-changelog gate: every prompt version that an experiment ships has a changelog entry, and every
entry names the gold-set run that measured that version.

A prompt's version is the content hash `PromptSet.version` (pipeline/prompts.py): changing one character of any
template changes it. `configs/prompt_changelog/<experiment>.yaml` records each version:

    format_version: 1
    experiment: hello
    entries:
      - version: 3f2a9c01d4e5
        date: 2026-12-01
        author: ana
        note: offer the topics as a list to choose from
        gold_run: runs/hello-2026-12-01-101500

`check_prompt_versions` (run by `assay prompt check` in CI) returns one `Problem` per experiment whose current
version has no entry, or whose entry has no gold-set run, with the exact fix: so a prompt cannot change without
someone writing down why and measuring the new wording on the gold set.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, field_validator, model_validator

from pipeline.config import REPO_ROOT, StrictModel, list_experiments, load_experiment, read_yaml, validate_as
from pipeline.llm.errors import ConfigError
from pipeline.prompts import PromptSet

__all__ = [
    "DEFAULT_CHANGELOG_DIR",
    "ChangelogEntry",
    "Problem",
    "PromptChangelog",
    "changelog_path",
    "check_prompt_versions",
    "current_prompt_version",
    "load_changelog",
    "write_changelog",
]

DEFAULT_CHANGELOG_DIR = REPO_ROOT / "configs" / "prompt_changelog"
BASELINE_GOLD_RUN = "baseline (before the changelog gate)"
"""The gold_run of prompt versions that predate the gate (measured by the runs of that time, not recorded)."""


class ChangelogEntry(StrictModel):
    """One prompt version of an experiment: when, by whom, why, and the gold-set run that measured it."""

    version: str = Field(pattern=r"^[0-9a-f]{12}$", description="PromptSet.version: 12 hex digits.")
    date: dt.date = Field(description="When this version was introduced (YYYY-MM-DD).")
    author: str = Field(min_length=1)
    note: str = Field(min_length=1, description="What changed and why.")
    gold_run: str = Field("", description="Run folder or id of a gold-set run of this version; '' = none yet.")

    @field_validator("version", mode="before")
    @classmethod
    def _text(cls, value: object) -> object:
        # YAML reads an all-digit hash (e.g. 123456789012) as an int; a version is text.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class PromptChangelog(StrictModel):
    """The changelog file of one experiment."""

    format_version: Literal[1] = 1
    experiment: str
    entries: list[ChangelogEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_versions(self) -> PromptChangelog:
        seen: set[str] = set()
        for entry in self.entries:
            if entry.version in seen:
                raise ValueError(f"version {entry.version} has two entries; keep one (edit its note or gold_run)")
            seen.add(entry.version)
        return self

    def entry(self, version: str) -> ChangelogEntry | None:
        """The entry of `version`, if any."""
        return next((entry for entry in self.entries if entry.version == version), None)


@dataclass(frozen=True)
class Problem:
    """One failure of the gate."""

    experiment: str
    version: str
    message: str
    """What is wrong and the exact fix, in one line."""

    def __str__(self) -> str:
        return self.message


def changelog_path(experiment: str, changelog_dir: Path | None = None) -> Path:
    """`configs/prompt_changelog/<experiment>.yaml`."""
    return (changelog_dir or DEFAULT_CHANGELOG_DIR) / f"{experiment}.yaml"


def load_changelog(path: Path) -> PromptChangelog:
    """Read and validate a changelog file (errors name the file and the field)."""
    return validate_as(PromptChangelog, read_yaml(path), str(path))


def write_changelog(path: Path, changelog: PromptChangelog) -> None:
    """Write a changelog file that `load_changelog` reads back."""
    data = changelog.model_dump(mode="json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120), encoding="utf-8")


def current_prompt_version(experiment: str, experiments_dir: Path | None = None) -> str:
    """The content hash of the experiment's prompts as shipped (no overrides applied)."""
    config = load_experiment(experiment, experiments_dir=experiments_dir, environ={})
    return PromptSet.from_config(config.prompts).version


def _entry_snippet(version: str) -> str:
    return (
        f"{{version: {version}, date: {dt.date.today().isoformat()}, author: <you>, note: <what changed and why>, "
        "gold_run: <run folder of a gold-set run of this version>}"
    )


def check_prompt_versions(
    experiments: Sequence[str] | None = None,
    *,
    experiments_dir: Path | None = None,
    changelog_dir: Path | None = None,
) -> list[Problem]:
    """Problems of the gate for `experiments` (default: every experiment); an empty list means it passes."""
    names = list(experiments) if experiments is not None else list_experiments(experiments_dir)
    problems: list[Problem] = []
    for name in names:
        version = current_prompt_version(name, experiments_dir)
        path = changelog_path(name, changelog_dir)
        if not path.exists():
            problems.append(
                Problem(
                    name,
                    version,
                    f"{name}: prompt version {version} has no changelog: create {path} with format_version: 1, "
                    f"experiment: {name}, entries: [{_entry_snippet(version)}]",
                )
            )
            continue
        try:
            changelog = load_changelog(path)
        except ConfigError as exc:
            problems.append(Problem(name, version, f"{name}: {exc}"))
            continue
        if changelog.experiment != name:
            problems.append(
                Problem(
                    name,
                    version,
                    f"{path}: experiment is {changelog.experiment!r} but the file belongs to {name!r}; "
                    f"set experiment: {name}",
                )
            )
            continue
        entry = changelog.entry(version)
        if entry is None:
            problems.append(
                Problem(
                    name,
                    version,
                    f"{name}: the current prompt version {version} has no entry in {path}; the prompt changed since "
                    f"the last entry: add to entries: {_entry_snippet(version)}",
                )
            )
        elif not entry.gold_run.strip():
            problems.append(
                Problem(
                    name,
                    version,
                    f"{name}: prompt version {version} in {path} has no gold_run; run the gold set with this prompt "
                    f"and set gold_run: <its run folder> in that entry",
                )
            )
    return problems
