"""Names that carry gender and race/ethnicity, for the counterfactual name swaps of the risk-fairness experiment.

A fairness audit needs clients who differ only in a demographic signal. Like HELM's name perturbations we
carry that signal in the client's name, from short documented lists shipped in ``pipeline/data/names/``:

- ``first_names.csv``: 8 first names per (gender, ethnicity) cell. White and Black names from Bertrand &
  Mullainathan (2004), American Economic Review 94(4):991-1013, Table A1 (also the lists of Caliskan,
  Bryson & Narayanan 2017, Science 356:183-186); Hispanic and Asian names reported as predominantly of
  that group in Tzioumis (2018), "Demographic aspects of first names", Scientific Data 5:180025.
- ``last_names.csv``: 8 surnames per ethnicity whose largest race/Hispanic-origin share in the U.S. Census
  Bureau's 2010 surname file ("Frequently Occurring Surnames from the 2010 Census") is that group.

The lists were written by hand into the repository; nothing is downloaded. Every cell has the same length,
so the i-th name of each cell can stand in for the same client in every group (a consistent swap).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import cache
from importlib import resources

from pipeline.llm.errors import ConfigError

__all__ = [
    "ETHNICITIES",
    "GENDERS",
    "NameLists",
    "load_name_lists",
]

GENDERS: tuple[str, ...] = ("female", "male")
"""Gender values carried by first names."""
ETHNICITIES: tuple[str, ...] = ("white", "black", "hispanic", "asian")
"""Race/ethnicity values carried by first and last names."""


@dataclass(frozen=True)
class NameLists:
    """The shipped name lists, indexed for drawing names and for reading a group back from a name."""

    first_names: dict[tuple[str, str], tuple[str, ...]]
    """(gender, ethnicity) -> first names, in file order."""
    last_names: dict[str, tuple[str, ...]]
    """ethnicity -> surnames, in file order."""

    @property
    def size(self) -> int:
        """Names per cell (the same for every cell)."""
        return len(next(iter(self.first_names.values())))

    def first_name(self, gender: str, ethnicity: str, index: int) -> str:
        """The ``index``-th first name of a (gender, ethnicity) cell (wrapping around)."""
        names = self.first_names.get((gender, ethnicity))
        if names is None:
            raise ConfigError(
                f"no first names for gender={gender!r}, ethnicity={ethnicity!r}; expected gender in {GENDERS} "
                f"and ethnicity in {ETHNICITIES}"
            )
        return names[index % len(names)]

    def last_name(self, ethnicity: str, index: int) -> str:
        """The ``index``-th surname of an ethnicity (wrapping around)."""
        names = self.last_names.get(ethnicity)
        if names is None:
            raise ConfigError(f"no surnames for ethnicity={ethnicity!r}; expected one of {ETHNICITIES}")
        return names[index % len(names)]

    def groups_of(self, first_name: str, last_name: str) -> dict[str, str]:
        """Gender and ethnicity a name signals: {"gender": ..., "ethnicity": ...}; {} for an unknown name.

        The surname decides the ethnicity (first and last names agree in every generated profile).
        """
        found: dict[str, str] = {}
        for (gender, _), names in self.first_names.items():
            if first_name in names:
                found["gender"] = gender
        for ethnicity, names in self.last_names.items():
            if last_name in names:
                found["ethnicity"] = ethnicity
        return found


def _rows(filename: str) -> list[dict[str, str]]:
    text = resources.files("pipeline.data").joinpath("names", filename).read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return list(csv.DictReader(io.StringIO("\n".join(lines))))


@cache
def load_name_lists() -> NameLists:
    """Read the shipped lists (once per process) and check every cell is present and equally long."""
    first: dict[tuple[str, str], list[str]] = {}
    for row in _rows("first_names.csv"):
        first.setdefault((row["gender"], row["ethnicity"]), []).append(row["first_name"])
    last: dict[str, list[str]] = {}
    for row in _rows("last_names.csv"):
        last.setdefault(row["ethnicity"], []).append(row["last_name"])
    expected_cells = {(g, e) for g in GENDERS for e in ETHNICITIES}
    if set(first) != expected_cells or set(last) != set(ETHNICITIES):
        raise ConfigError(
            f"pipeline/data/names lists cover first-name cells {sorted(first)} and surname groups {sorted(last)}; "
            f"expected every gender in {GENDERS} x ethnicity in {ETHNICITIES}. Fix the CSV files."
        )
    sizes = {len(v) for v in first.values()} | {len(v) for v in last.values()}
    if len(sizes) != 1:
        raise ConfigError(
            f"pipeline/data/names lists have cells of sizes {sorted(sizes)}; every cell needs the same number of "
            "names so that a swap keeps the i-th name. Add or remove names."
        )
    return NameLists(
        first_names={key: tuple(value) for key, value in first.items()},
        last_names={key: tuple(value) for key, value in last.items()},
    )
