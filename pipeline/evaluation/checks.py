"""Hard checks: declarative, deterministic tests of every answer, configured in an experiment's YAML.

    checks:
      - {type: valid_json}
      - {type: json_schema, json_schema: {type: object, required: [topic]}}
      - {type: label_in_set, field: topic, labels: [sports, cooking]}
      - {type: regex, pattern: "^\\\\{", must_match: true, name: starts_with_brace}
      - {type: length, max_chars: 400}
      - {type: numeric_range, field: score, min: 1, max: 5}
      - {type: custom, callable: pipeline.evaluation.custom_checks.no_refusal}

Each check type is its own pydantic model, told apart by `type`. A custom check names a callable by dotted
path; only the project's own modules (`pipeline.`, `checks.`) may be named, because a YAML file that could
import any module (`os.system`) would run arbitrary code from configuration. A custom callable takes the
answer text and returns None or True (passed), False or a reason string (failed).

`run_checks` gives one `CheckResult` per (item, check); `summarize` the pass rate per check and the
failures; `pass_rate_ok` the verdict an asset check reports (observed rate and threshold).
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import Annotated, Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.evaluation.answers import is_number
from pipeline.evaluation.records import Record
from pipeline.extract import extract_json
from pipeline.llm.errors import ConfigError, OutputValidationError

__all__ = [
    "PROJECT_MODULE_PREFIXES",
    "CheckConfig",
    "CheckResult",
    "CheckStat",
    "CheckSummary",
    "ChecksConfig",
    "CustomCheck",
    "JsonSchemaCheck",
    "LabelInSetCheck",
    "LengthCheck",
    "NumericRangeCheck",
    "PassRateVerdict",
    "RegexCheck",
    "ValidJsonCheck",
    "load_checks",
    "pass_rate_ok",
    "resolve_callable",
    "run_checks",
    "summarize",
]

PROJECT_MODULE_PREFIXES: tuple[str, ...] = ("pipeline.", "checks.")
"""Modules a custom check may come from: the project's own code only."""

CustomCallable = Callable[[str], bool | str | None]


class _Check(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("", description="Name in results and summaries; '' = the type (plus the field, if any).")

    @property
    def label(self) -> str:
        """The check's name in results."""
        return self.name or self._default_name()

    def _default_name(self) -> str:
        field = getattr(self, "field", None)
        kind: str = getattr(self, "type")  # noqa: B009 (every subclass declares it as a Literal)
        return f"{kind}:{field}" if field else kind

    def run(self, text: str) -> str | None:
        """None when `text` passes, else why it fails."""
        raise NotImplementedError


def _parsed(text: str, strict: bool) -> Any:
    """The answer's JSON: the whole text when strict, else the first JSON object in it (as extraction does)."""
    if strict:
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise OutputValidationError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    return extract_json(text)


def _field(value: Any, path: str) -> Any:
    """`value[a][b]` for path `a.b`; KeyError naming the missing part."""
    node = value
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise KeyError(f"field {path!r} is missing (no {part!r})")
    return node


class _JsonCheck(_Check):
    strict: bool = Field(
        False,
        description="True: the whole answer must be JSON. False: the first JSON object in it is used (code fences "
        "and prose around it allowed, as the extraction stage does).",
    )

    def _value(self, text: str) -> Any:
        return _parsed(text, self.strict)


class ValidJsonCheck(_JsonCheck):
    """The answer is (or contains) valid JSON."""

    type: Literal["valid_json"]

    def run(self, text: str) -> str | None:
        """None when `text` passes, else why it fails."""
        try:
            self._value(text)
        except OutputValidationError as exc:
            return str(exc)
        return None


class JsonSchemaCheck(_JsonCheck):
    """The answer's JSON satisfies a JSON Schema (draft 2020-12)."""

    type: Literal["json_schema"]
    json_schema: dict[str, Any] = Field(description="The JSON Schema the answer must satisfy.")

    @field_validator("json_schema")
    @classmethod
    def _schema_is_valid(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            jsonschema.Draft202012Validator.check_schema(value)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
        return value

    @cached_property
    def _validator(self) -> jsonschema.Draft202012Validator:
        return jsonschema.Draft202012Validator(self.json_schema)

    def run(self, text: str) -> str | None:
        """None when `text` passes, else why it fails."""
        try:
            value = self._value(text)
        except OutputValidationError as exc:
            return str(exc)
        error = jsonschema.exceptions.best_match(self._validator.iter_errors(value))
        if error is None:
            return None
        where = "/".join(str(part) for part in error.absolute_path) or "the answer"
        return f"{where}: {error.message}"


class LabelInSetCheck(_JsonCheck):
    """A label (a JSON field, or the whole answer text) is one of the allowed labels."""

    type: Literal["label_in_set"]
    labels: list[str] = Field(min_length=1, description="Allowed labels.")
    field: str | None = Field(None, description="Dotted path of the label in the answer's JSON; None = the text.")
    case_sensitive: bool = Field(False, description="False: 'Sports' counts as 'sports'.")

    def run(self, text: str) -> str | None:
        """None when `text` passes, else why it fails."""
        if self.field is None:
            label: Any = text.strip()
        else:
            try:
                label = _field(self._value(text), self.field)
            except (OutputValidationError, KeyError) as exc:
                return str(exc).strip("'\"")
        allowed = self.labels if self.case_sensitive else [label.casefold() for label in self.labels]
        found = label if self.case_sensitive or not isinstance(label, str) else label.strip().casefold()
        if found in allowed:
            return None
        return f"{label!r} is not one of {self.labels}"


class RegexCheck(_Check):
    """The answer text matches (or must not match) a regular expression (`re.search`)."""

    type: Literal["regex"]
    pattern: str = Field(description="Python regular expression, searched anywhere in the answer.")
    must_match: bool = Field(True, description="True: the pattern must occur. False: it must not occur.")
    ignore_case: bool = False

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    def run(self, text: str) -> str | None:
        """None when `text` passes, else why it fails."""
        found = re.search(self.pattern, text, re.IGNORECASE if self.ignore_case else 0)
        if self.must_match and found is None:
            return f"does not match /{self.pattern}/"
        if not self.must_match and found is not None:
            return f"matches /{self.pattern}/ at {found.group(0)!r}, which is forbidden"
        return None


class LengthCheck(_Check):
    """The answer's length in characters (stripped) lies within bounds."""

    type: Literal["length"]
    min_chars: int | None = Field(None, ge=0)
    max_chars: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> LengthCheck:
        if self.min_chars is None and self.max_chars is None:
            raise ValueError("give min_chars, max_chars or both")
        if self.min_chars is not None and self.max_chars is not None and self.min_chars > self.max_chars:
            raise ValueError(f"min_chars {self.min_chars} is above max_chars {self.max_chars}; swap them")
        return self

    def run(self, text: str) -> str | None:
        """None when `text` passes, else why it fails."""
        length = len(text.strip())
        if self.min_chars is not None and length < self.min_chars:
            return f"{length} characters, fewer than the minimum {self.min_chars}"
        if self.max_chars is not None and length > self.max_chars:
            return f"{length} characters, more than the maximum {self.max_chars}"
        return None


class NumericRangeCheck(_JsonCheck):
    """A numeric field of the answer's JSON lies in [min, max]."""

    type: Literal["numeric_range"]
    field: str = Field(description="Dotted path of the number in the answer's JSON.")
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bounds(self) -> NumericRangeCheck:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}; swap them")
        return self

    def run(self, text: str) -> str | None:
        """None when `text` passes, else why it fails."""
        try:
            value = _field(self._value(text), self.field)
        except (OutputValidationError, KeyError) as exc:
            return str(exc).strip("'\"")
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                return f"field {self.field!r} is {value!r}, not a number"
        if not is_number(value):
            return f"field {self.field!r} is {value!r}, not a number"
        if self.min is not None and value < self.min:
            return f"field {self.field!r} is {value}, below the minimum {self.min}"
        if self.max is not None and value > self.max:
            return f"field {self.field!r} is {value}, above the maximum {self.max}"
        return None


def resolve_callable(path: str, allowed: Sequence[str] = PROJECT_MODULE_PREFIXES) -> CustomCallable:
    """Import `module.function` (or `module:function`) from the project's own modules; ConfigError otherwise."""
    if not path.startswith(tuple(allowed)):
        raise ConfigError(
            f"custom check callable {path!r} is outside the project's modules; only names starting with "
            f"{' or '.join(repr(prefix) for prefix in allowed)} may be imported (move the function into "
            "pipeline/ or a checks/ package)"
        )
    module_name, sep, attribute = path.partition(":") if ":" in path else path.rpartition(".")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"custom check callable {path!r}: expected module.function, e.g. checks.mine.no_refusal")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"custom check callable {path!r}: module {module_name!r} cannot be imported ({exc})"
        ) from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise ConfigError(
            f"custom check callable {path!r}: {module_name} has no function {attribute!r}; check the spelling"
        )
    checked: CustomCallable = function
    return checked


class CustomCheck(_Check):
    """A project function decides: `fn(answer_text) -> None | True` passes, `False | "reason"` fails."""

    type: Literal["custom"]
    callable: str = Field(
        description="Dotted path in the project's modules, e.g. pipeline.evaluation.custom_checks.no_refusal."
    )

    @field_validator("callable")
    @classmethod
    def _inside_project(cls, value: str) -> str:
        if not value.startswith(PROJECT_MODULE_PREFIXES):
            raise ValueError(
                f"{value!r} is outside the project's modules; only names starting with "
                f"{' or '.join(repr(prefix) for prefix in PROJECT_MODULE_PREFIXES)} may be imported "
                "(move the function into pipeline/ or a checks/ package)"
            )
        return value

    def _default_name(self) -> str:
        return f"custom:{self.callable.replace(':', '.').rsplit('.', 1)[-1]}"

    @cached_property
    def _function(self) -> CustomCallable:
        return resolve_callable(self.callable)

    def run(self, text: str) -> str | None:
        """None when `text` passes, else why it fails."""
        outcome = self._function(text)
        if outcome is None or outcome is True or outcome == "":
            return None
        if outcome is False:
            return f"{self.callable} returned False"
        return str(outcome)


CheckConfig = Annotated[
    ValidJsonCheck | JsonSchemaCheck | LabelInSetCheck | RegexCheck | LengthCheck | NumericRangeCheck | CustomCheck,
    Field(discriminator="type"),
]
"""One check of any type, chosen by its `type` key."""


class ChecksConfig(BaseModel):
    """The hard checks of an experiment (the `checks:` list of its YAML)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    checks: list[CheckConfig] = Field(default_factory=list)
    min_pass_rate: float = Field(1.0, ge=0, le=1, description="Lowest pass rate of any check the asset check accepts.")

    @model_validator(mode="after")
    def _unique_names(self) -> ChecksConfig:
        seen: set[str] = set()
        for check in self.checks:
            if check.label in seen:
                raise ValueError(f"two checks are named {check.label!r}; give one of them a distinct `name:`")
            seen.add(check.label)
        return self


def load_checks(data: Mapping[str, Any], source: str = "checks") -> ChecksConfig:
    """Validate a `{checks: [...], min_pass_rate: ...}` mapping; errors name `source`, the field and the fix."""
    from pipeline.config import validate_as  # pipeline.config imports this module for ExperimentConfig.checks

    return validate_as(ChecksConfig, data, source)


class CheckResult(Record):
    """The outcome of one check on one item's answer."""

    format_version: Literal[1] = 1
    item_id: str
    check: str
    """The check's name (`label`)."""
    passed: bool
    detail: str = ""
    """Why it failed ('' when it passed)."""


def run_checks(answers: Mapping[str, str | None], checks: Sequence[CheckConfig] | ChecksConfig) -> list[CheckResult]:
    """Every check on every answer (item id -> answer text); a missing answer (None) fails every check."""
    check_list = checks.checks if isinstance(checks, ChecksConfig) else list(checks)
    results = []
    for item_id, text in answers.items():
        for check in check_list:
            detail = "no answer" if text is None else check.run(text)
            results.append(
                CheckResult(item_id=str(item_id), check=check.label, passed=detail is None, detail=detail or "")
            )
    return results


class CheckStat(Record):
    """Pass rate of one check over all items."""

    format_version: Literal[1] = 1
    check: str
    passed: int
    failed: int

    @property
    def pass_rate(self) -> float:
        """passed / (passed + failed); 1.0 when no item was checked."""
        total = self.passed + self.failed
        return self.passed / total if total else 1.0


class CheckSummary(Record):
    """Pass rate per check and every failure."""

    format_version: Literal[1] = 1
    n_items: int
    per_check: tuple[CheckStat, ...]
    failures: tuple[CheckResult, ...]


def summarize(results: Sequence[CheckResult]) -> CheckSummary:
    """Group results by check (in first-seen order) and list the failures."""
    counts: dict[str, list[int]] = {}
    for result in results:
        passed_failed = counts.setdefault(result.check, [0, 0])
        passed_failed[0 if result.passed else 1] += 1
    return CheckSummary(
        n_items=len({result.item_id for result in results}),
        per_check=tuple(CheckStat(check=name, passed=p, failed=f) for name, (p, f) in counts.items()),
        failures=tuple(result for result in results if not result.passed),
    )


class PassRateVerdict(Record):
    """Whether every check passed often enough: what an asset check reports."""

    format_version: Literal[1] = 1
    ok: bool
    threshold: float
    lowest_rate: float
    """The lowest pass rate of any check (1.0 with no checks)."""
    below: tuple[str, ...]
    """Checks whose pass rate is under the threshold."""

    def __bool__(self) -> bool:
        return self.ok


def pass_rate_ok(summary: CheckSummary, threshold: float) -> PassRateVerdict:
    """Ok when every check's pass rate is at least `threshold` (0..1)."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1] (a pass rate, e.g. 0.95), got {threshold!r}")
    below = tuple(stat.check for stat in summary.per_check if stat.pass_rate < threshold)
    lowest = min((stat.pass_rate for stat in summary.per_check), default=1.0)
    return PassRateVerdict(ok=not below, threshold=threshold, lowest_rate=lowest, below=below)
