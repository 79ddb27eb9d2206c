"""Typed configuration: the model zoo (`configs/models.yaml`) and experiment files.

Precedence, lowest first: defaults in these classes < the YAML file < `ASSAY_*` environment < command-line
`--set key=value` flags. Every loader reports errors as one line naming the file, the field path, what was
expected and what was found.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from pipeline.evaluation.checks import ChecksConfig
from pipeline.evaluation.drift_config import DriftConfig
from pipeline.evaluation.judges import JudgeConfig as RubricJudgeConfig
from pipeline.evaluation.perspectives import PerspectivesConfig
from pipeline.llm.errors import ConfigError
from pipeline.secrets import DEFAULT_KEY_ENV, register_secret_env_names
from pipeline.strict import StrictModel

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODELS_FILE = REPO_ROOT / "configs" / "models.yaml"


def assay_home() -> Path:
    """Assay's local state (store, work folders, models, Dagster home): $ASSAY_HOME, else `.assay` in the repo.

    Read at call time, never at import, and anchored to the repository so that running `assay` from another
    directory still finds the same store and the same joined model.
    """
    return Path(os.environ.get("ASSAY_HOME") or REPO_ROOT / ".assay").resolve()


_T = TypeVar("_T", bound=BaseModel)
_ENV_REF = re.compile(r"\$\{([A-Z0-9_]+)(?::-([^}]*))?\}")


class Price(StrictModel):
    """USD per million tokens; overrides litellm's price table for this alias."""

    input_per_mtok: float = Field(ge=0, description="USD per 1M prompt tokens.")
    output_per_mtok: float = Field(ge=0, description="USD per 1M completion tokens.")


class Limits(StrictModel):
    """Client-side limits for one model endpoint (providers rate-limit per model)."""

    max_concurrent: int = Field(8, ge=1, description="Most calls in flight at once (the adaptive ceiling).")
    rpm: int | None = Field(None, ge=1, description="Requests per minute; None = unlimited.")
    tpm: int | None = Field(None, ge=1, description="Tokens (prompt + max output) per minute; None = unlimited.")


class ModelConfig(StrictModel):
    """One alias of the model zoo."""

    model: str = Field(description="litellm model id, e.g. 'openai/gpt-4o-mini-2024-07-18' or 'local/<name>'.")
    version: str | None = Field(
        None,
        description="Version pin: part of every call_id, so bumping it invalidates cached answers of this alias.",
    )
    api_base: str | None = Field(None, description="Base URL of an OpenAI-compatible server; ${VAR:-default} expands.")
    api_key_env: str | None = Field(
        None,
        description="Environment variable holding the key; None = litellm's default for the provider "
        "(or no key for local and keyless servers).",
    )
    needs_key: bool = Field(True, description="False for servers that take no key (local, fake).")
    price: Price | None = Field(None, description="Price override; None = litellm's table (0 if unknown there).")
    limits: Limits = Field(default_factory=Limits)
    fallbacks: tuple[str, ...] = Field((), description="Aliases tried in order after this one's retries run out.")
    timeout_s: float = Field(60.0, gt=0, description="Per-attempt timeout in seconds.")
    max_attempts: int = Field(5, ge=1, le=20, description="Attempts per model before falling back (1 = no retry).")

    @field_validator("version", mode="before")
    @classmethod
    def _version_is_text(cls, value: Any) -> Any:
        # `--set models.x.version=2` and `version: 2024` parse as numbers; a pin is a label, not a number.
        return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value

    @field_validator("model")
    @classmethod
    def _model_has_provider(cls, value: str) -> str:
        if "/" not in value:
            raise ValueError(f"expected 'provider/model' (e.g. 'openai/{value}'), found {value!r}")
        return value

    @property
    def provider(self) -> str:
        """The part of `model` before the first '/'."""
        return self.model.split("/", 1)[0]


class ModelZoo(StrictModel):
    """All aliases of `configs/models.yaml`, plus the default alias for API runs."""

    default: str = Field(
        "", description="Alias used by API runs when none is named; '' = gpt4o_mini if present, else the first."
    )
    models: dict[str, ModelConfig]

    @model_validator(mode="before")
    @classmethod
    def _default_alias(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("default") and isinstance(data.get("models"), dict):
            aliases = list(data["models"])
            data = {**data, "default": "gpt4o_mini" if "gpt4o_mini" in aliases else (aliases[0] if aliases else "")}
        return data

    @model_validator(mode="after")
    def _references_exist(self) -> ModelZoo:
        if self.default not in self.models:
            raise ValueError(f"default names unknown alias {self.default!r}; known: {sorted(self.models)}")
        for alias, cfg in self.models.items():
            for fallback in cfg.fallbacks:
                if fallback not in self.models:
                    raise ValueError(
                        f"models.{alias}.fallbacks names unknown alias {fallback!r}; known: {sorted(self.models)}"
                    )
        return self

    def get(self, alias: str) -> ModelConfig:
        """The config of `alias`; an unknown alias is a ConfigError listing the known ones."""
        try:
            return self.models[alias]
        except KeyError:
            raise ConfigError(
                f"unknown model alias {alias!r}; known aliases: {', '.join(sorted(self.models))} "
                f"(add it to configs/models.yaml)"
            ) from None


# ---------------------------------------------------------------------------------------------------------
# Loading with overrides


def expand_env(value: str, environ: Mapping[str, str] | None = None) -> str:
    """Expand `${VAR}` and `${VAR:-default}` references (used for api_base)."""
    env = os.environ if environ is None else environ

    def _sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(f"${{{name}}} is referenced but not set; set {name} or give a default as ${{{name}:-...}}")

    return _ENV_REF.sub(_sub, value)


def parse_set_flag(flag: str) -> tuple[list[str], Any]:
    """Split `a.b.c=value` into a key path and a YAML-parsed value."""
    if "=" not in flag:
        raise ConfigError(f"--set {flag!r}: expected key.path=value, e.g. models.gpt4o_mini.timeout_s=30")
    key, raw = flag.split("=", 1)
    path = [part for part in key.strip().split(".") if part]
    if not path:
        raise ConfigError(f"--set {flag!r}: the key before '=' is empty")
    return path, yaml.safe_load(raw) if raw.strip() else ""


def apply_overrides(data: dict[str, Any], flags: Iterable[str], *, prefix: str | None = None) -> dict[str, Any]:
    """Apply `--set` flags to nested dict `data` (in place; returned for chaining).

    With `prefix`, only flags whose path starts with it apply, and the prefix is stripped
    (`models.gpt4o.timeout_s=3` applies to the zoo file as `models.gpt4o.timeout_s`, prefix None).
    """
    for flag in flags:
        path, value = parse_set_flag(flag)
        if prefix is not None:
            if path[0] != prefix:
                continue
            path = path[1:]
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {flag!r}: {part!r} holds {child!r}, not a mapping")
            node = child
        node[path[-1]] = value
    return data


def format_validation_error(source: str, error: ValidationError, overrides: Sequence[str] = ()) -> str:
    """One line per problem: file (or the override that set the field), field path, expected, found."""
    lines = []
    for problem in error.errors():
        location = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        origin = _override_origin(location, overrides) or source
        found = problem.get("input")
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = "unknown field (check its spelling)"
        elif problem["type"] == "missing":
            message = "required field is missing"
        # A cross-field check (value_error on a whole object) already names what it found; echoing the
        # object back would dump the file.
        echo = problem["type"] not in ("missing", "value_error") or not isinstance(found, dict)
        found_text = f"; found {found!r}" if echo and problem["type"] != "missing" else ""
        if found_text and repr(found) in message:  # a custom validator already quoted the value
            found_text = ""
        if problem["type"] == "value_error" and isinstance(found, dict):
            location = location if location != "(top level)" else "models"
        lines.append(f"{origin}: {location}: {message}{found_text}")
    return "\n".join(lines)


def _override_origin(location: str, overrides: Sequence[str]) -> str | None:
    """`--set <flag>` when the last override that wrote `location` (or a parent of it) is to blame."""
    for flag in reversed(overrides):
        key = flag.partition("=")[0].strip()
        if location == key or location.startswith(key + "."):
            return f"override {flag} (--set or ASSAY_*)"
    return None


def utf8_problem(path: Path, data: bytes | None = None) -> str:
    """Where `path` (or its bytes `data`) stops being UTF-8, as one line: byte offset, line, the encoding to use.

    '' when it is valid UTF-8. Used on the error path only (it reads the whole file).
    """
    raw = path.read_bytes() if data is None else data
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        # A guess for the hint only: cp1252 (Windows "ANSI", what spreadsheets save as "CSV") decodes most
        # Western text; latin-1 decodes any byte, so it is the fallback.
        try:
            raw.decode("cp1252")
            source_encoding = "cp1252"
        except UnicodeDecodeError:
            source_encoding = "latin-1"
        return (
            f"{path}: not valid UTF-8 at byte offset {exc.start} (line {line}, byte {raw[exc.start]:#04x}); "
            f"save the file as UTF-8 (it looks like {source_encoding}: "
            f"iconv -f {source_encoding} -t utf-8 {path.name} > {path.stem}.utf8{path.suffix})"
        )
    return ""


def read_utf8_text(path: Path) -> str:
    """The text of `path`; a missing file or one that is not UTF-8 is a ConfigError naming the file and byte."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder; expected a file") from None
    try:
        return data.decode("utf-8-sig")  # -sig: editors on Windows often start a file with a byte-order mark
    except UnicodeDecodeError:
        raise ConfigError(utf8_problem(path, data)) from None


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file, one not in UTF-8 or broken YAML is a ConfigError naming the file."""
    text = read_utf8_text(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, found {type(data).__name__}")
    return data


def validate_as(cls: type[_T], data: Mapping[str, Any], source: str, overrides: Sequence[str] = ()) -> _T:
    """Validate `data` as `cls`, turning pydantic's report into a ConfigError (naming the file or flag)."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc, overrides)) from None


def load_model_zoo(path: Path | None = None, overrides: Iterable[str] = ()) -> ModelZoo:
    """Load `configs/models.yaml` (or `path`), apply `--set models.<alias>.<field>=...` flags, expand env refs."""
    path = path or Path(os.environ.get("ASSAY_MODELS_FILE", DEFAULT_MODELS_FILE))
    flags = [flag for flag in overrides if flag.startswith(("models.", "default="))]
    data = apply_overrides(read_yaml(path), flags)
    models = data.get("models")
    for alias, cfg in models.items() if isinstance(models, dict) else []:
        if isinstance(cfg, dict) and isinstance(cfg.get("api_base"), str):
            try:
                cfg["api_base"] = expand_env(cfg["api_base"])
            except ConfigError as exc:
                raise ConfigError(f"{path}: models.{alias}.api_base: {exc}") from None
    zoo = validate_as(ModelZoo, data, str(path), flags)
    register_secret_env_names(key_env_names(zoo))
    return zoo


def key_env_names(zoo: ModelZoo) -> set[str]:
    """Every environment variable the zoo's models read a key from (their values are scrubbed everywhere)."""
    names = {cfg.api_key_env or DEFAULT_KEY_ENV.get(cfg.provider) for cfg in zoo.models.values()}
    return {name for name in names if name}


# ---------------------------------------------------------------------------------------------------------
# Experiment files: configs/experiments/<name>.yaml

DEFAULT_EXPERIMENTS_DIR = REPO_ROOT / "configs" / "experiments"
AUTO_MODEL = "auto"
"""Model choice meaning: the zoo's default API model when its key is set, else the offline `local` model."""


class SampleConfig(StrictModel):
    """Reproducible sampling of the loaded items."""

    n: int | None = Field(None, ge=1, description="Keep n items (None = all).")
    seed: int = Field(0, description="Seed of the sample, so the same n gives the same items.")


class DatasetConfig(StrictModel):
    """Where the items come from."""

    loader: str = Field("inline", description="inline | csv | jsonl | products_csv (see pipeline/data/loaders.py).")
    path: str | None = Field(None, description="File to load, relative to the repository root (csv, jsonl).")
    items: list[dict[str, Any]] = Field(default_factory=list, description="Items given in the file (loader inline).")
    id_field: str = Field("id", description="Column holding each item's unique id.")
    text_field: str = Field("text", description="Column holding the text the prompt is about.")
    gold_field: str | None = Field(None, description="Column holding the gold label, if any.")
    limit: int | None = Field(None, ge=1, description="Keep the first n items (after loading, before sampling).")
    sample: SampleConfig = Field(default_factory=SampleConfig)
    taxonomy: str | None = Field(None, description="Taxonomy XML (assign-cat kind), relative to the repo root.")
    single_item: str | None = Field(None, description="Classify only this one text (CLI --single-item).")


class PromptConfig(StrictModel):
    """Prompt templates: `{field}` placeholders are filled from the item and the experiment (see prompts.py)."""

    system: str = Field("", description="System message template ('' = none).")
    user: str = Field(description="User message template.")
    repair: str = Field(
        "Your previous answer was not valid: {reason}\nAnswer again with only the JSON object.",
        description="Message appended for the one repair call after an invalid answer.",
    )
    user_batch: str = Field(
        "",
        description="User template when several items share one prompt (run.items_per_prompt > 1); "
        "{items} holds one item_line per item. '' = the batch is not supported by this experiment.",
    )
    item_line: str = Field("[{item_id}] {text}", description="How one item is listed inside {items}.")


class GenerationParams(StrictModel):
    """Sampling parameters of every call (all part of the call_id)."""

    temperature: float | None = Field(0.0, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int = Field(256, ge=1)
    seed: int | None = 0
    repeats: int = Field(1, ge=1, le=100, description="Times each prompt is asked (repeat index is hashed).")
    repeat_offset: int = Field(
        0,
        ge=0,
        description="Added to every repeat index: a canary run asks the same prompts again as new calls, where the "
        "store would otherwise answer them from the archive (the schedule sets it to the run's date).",
    )


class OutputConfig(StrictModel):
    """What a valid answer looks like."""

    labels: list[str] = Field(default_factory=list, description="Allowed labels (classify kind): the schema's enum.")
    label_field: str = Field("label", description="Field of the answer object that holds the label.")
    json_schema: dict[str, Any] | None = Field(None, description="Explicit JSON Schema of the answer (else built).")
    constrained: bool = Field(True, description="Send the schema as response_format (constrained decoding).")
    repair: bool = Field(True, description="Give an invalid answer one repair call.")


class BudgetConfig(StrictModel):
    """Spending limit of one experiment run."""

    max_cost_usd: float | None = Field(None, ge=0, description="Hard stop in USD; None = unlimited.")
    block_on_estimate: bool = Field(
        True,
        description="Refuse to start when spend + the upper-bound estimate exceeds the budget. False: start "
        "anyway and stop before the first call that would cross it (the live hard stop).",
    )


class RunConfig(StrictModel):
    """How calls are batched into Dagster runs."""

    batch_size: int = Field(5000, ge=1, description="Call partitions materialized per Dagster run.")
    items_per_prompt: int = Field(1, ge=1, le=100, description="Items sent in one prompt (answers matched back).")


class JudgeConfig(RubricJudgeConfig):
    """The judge stage: every valid answer graded by each judge model, `repeats` times, with the rubric judge of
    pipeline/evaluation/judges.py (rubric, score scale, verdicts; the first verdict means "the answer is right")."""

    models: list[str] = Field(min_length=1, description="Zoo aliases of the judges (or 'auto'); several = a vote.")
    repeats: int = Field(1, ge=1, le=20, description="Judgements per answer and judge; k > 1 exposes flaky items.")
    max_tokens: int = Field(200, ge=1, description="Output budget of one judgement.")
    temperature: float = Field(0.0, ge=0, le=2, description="Of every judgement; above 0 lets repeats differ.")
    show_expected: bool = Field(
        False,
        description="Fill {expected} with the gold answer. False: the judge grades blind, so its agreement with "
        "gold measures the judge.",
    )


class CanaryConfig(StrictModel):
    """A canary: the experiment re-run on a schedule against pinned models and compared with a baseline run."""

    cron: str = Field(description="When the canary runs (cron, e.g. '0 6 * * *'); a Dagster schedule per experiment.")
    models: list[str] = Field(min_length=1, description="Zoo aliases (pinned in configs/models.yaml) it runs on.")
    baseline: str = Field(
        description="The baseline run: a run folder (runs/<name>-...), or 'first' = the first canary run's answers, "
        "kept under .assay/work/<name>/canary_baseline.json."
    )
    timezone: str = Field("UTC", description="Time zone of `cron`.")
    running: bool = Field(False, description="Start the schedule switched on (else switch it on in the UI).")
    drift: DriftConfig = Field(default_factory=DriftConfig, description="When the drift check fails.")


class FairnessSection(StrictModel):
    """Settings of the risk_fairness kind: the client profiles it generates and the audit of the answers.

    Both parts are the domain's own models, validated here when a file has this section. They are imported
    only then: importing them at the top would load numpy and scipy into every process that reads a config
    (the call worker among them).
    """

    profiles: Any = Field(
        None,
        validate_default=True,
        description="pipeline.data.profiles.ProfileSampleConfig: n_profiles, seed, design (counterfactual | "
        "independent), vary (attributes crossed in the counterfactual design).",
    )
    audit: Any = Field(
        None,
        validate_default=True,
        description="pipeline.stats.fairness.FairnessConfig: attributes, intersectional, min_cell_size, "
        "bootstrap_resamples, monte_carlo_resamples, seed, alpha, confidence_level, correction, calibration_bins.",
    )

    @field_validator("profiles", mode="before")
    @classmethod
    def _profiles(cls, value: Any) -> Any:
        from pipeline.data.profiles import ProfileSampleConfig

        return _nested_model(ProfileSampleConfig, value)

    @field_validator("audit", mode="before")
    @classmethod
    def _audit(cls, value: Any) -> Any:
        from pipeline.stats.fairness import FairnessConfig

        return _nested_model(FairnessConfig, value)


def _nested_model(cls: type[_T], value: Any) -> _T:
    """`value` (a mapping, None for the defaults, or already a `cls`) as `cls`; problems as one line each."""
    if isinstance(value, cls):
        return value
    try:
        return cls.model_validate(value if value is not None else {})
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(part) for part in problem['loc']) or '(section)'}: "
            f"{problem['msg'].removeprefix('Value error, ')}"
            for problem in exc.errors()
        ]
        raise ValueError("; ".join(problems)) from None


KIND_DEFAULT_PROMPTS: dict[str, str] = {"risk_fairness": "pipeline.data.risk_prompt"}
"""Kinds that ship their own prompts: a module with SYSTEM_TEMPLATE and USER_TEMPLATE, used when the experiment
file has no `prompts` section (so the prompt version still hashes the templates that are sent)."""


class EnsembleSection(StrictModel):
    """The `ensemble:` section of an experiment of kind `ensemble` (pipeline/experiments/ensemble.py)."""

    task: str = Field(description="Task folder under configs/tasks/ (or a path to one): labels, voters, slices, data.")
    max_items: int | None = Field(
        None,
        ge=20,
        description="Use a seeded stratified subsample of this many of the task's items (None = all; `--limit` too).",
    )
    feedback: list[str] = Field(
        default_factory=list,
        description="Filled-in review queues (CSV/JSONL, relative to the repository root) whose reviewed labels "
        "join the gold set, each with its provenance.",
    )
    latency_items: int = Field(200, ge=1, description="Test items timed one at a time for the latency figures.")
    review_top_disagreements: int = Field(
        50, ge=0, description="Settled items with the most voter disagreement to review."
    )


class ExperimentConfig(StrictModel):
    """One experiment: becomes a Dagster asset group `<name>` and a job `<name>_job`."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$", description="Asset group and key prefix.")
    description: str = ""
    kind: str = Field(
        "classify",
        description="Experiment logic in pipeline/experiments/: classify | assign_cat | risk_fairness | ensemble.",
    )
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    prompts: PromptConfig
    models: list[str] = Field(default_factory=lambda: [AUTO_MODEL], description="Zoo aliases, or 'auto'.")
    params: GenerationParams = Field(default_factory=GenerationParams)
    output: OutputConfig = Field(default_factory=OutputConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    judge: JudgeConfig | None = Field(None, description="Grade every valid answer with LLM judges (a call stage).")
    ensemble: EnsembleSection | None = Field(None, description="Settings of the `ensemble` kind (its task).")
    checks: ChecksConfig | None = Field(None, description="Hard checks of every answer, and the pass rate to reach.")
    canary: CanaryConfig | None = Field(None, description="A scheduled canary compared with a baseline run.")
    perspectives: PerspectivesConfig | None = Field(
        None, description="Analyst roles answering each item, then a synthesis call per item (two call stages)."
    )
    fairness: FairnessSection | None = Field(
        None, description="Profiles and audit settings of the risk_fairness kind (None = its defaults)."
    )
    owners: list[str] = Field(
        default_factory=list,
        description="Owners of the experiment's assets in the Dagster UI: 'team:<name>' or an email address.",
    )

    @field_validator("owners")
    @classmethod
    def _owners_are_teams_or_emails(cls, value: list[str]) -> list[str]:
        for owner in value:
            if not (re.fullmatch(r"team:[A-Za-z0-9_-]+", owner) or re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", owner)):
                raise ValueError(f"expected 'team:<name>' or an email address as an owner, found {owner!r}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _kind_default_prompts(cls, data: Any) -> Any:
        if isinstance(data, dict) and "prompts" not in data and data.get("kind") in KIND_DEFAULT_PROMPTS:
            import importlib

            module = importlib.import_module(KIND_DEFAULT_PROMPTS[data["kind"]])
            data = {**data, "prompts": {"system": module.SYSTEM_TEMPLATE, "user": module.USER_TEMPLATE}}
        return data

    @property
    def asset_prefix(self) -> str:
        """Dagster key prefix: names with '-' become '_' (Dagster keys allow [A-Za-z0-9_])."""
        return self.name.replace("-", "_")


# ASSAY_* variables that map onto experiment fields (precedence: file < env < CLI).
ENV_OVERRIDES: dict[str, str] = {
    "ASSAY_MODEL": "models",
    "ASSAY_MAX_COST": "budget.max_cost_usd",
    "ASSAY_LIMIT": "dataset.limit",
    "ASSAY_BATCH_SIZE": "run.batch_size",
}


def experiment_path(name: str, experiments_dir: Path | None = None) -> Path:
    """The YAML file of experiment `name`; an unknown name lists the known ones."""
    directory = experiments_dir or DEFAULT_EXPERIMENTS_DIR
    path = directory / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in directory.glob("*.yaml"))
        raise ConfigError(f"unknown experiment {name!r}; known: {', '.join(known) or '(none)'} (in {directory})")
    return path


def list_experiments(experiments_dir: Path | None = None) -> list[str]:
    """Names of all experiment files."""
    return sorted(p.stem for p in (experiments_dir or DEFAULT_EXPERIMENTS_DIR).glob("*.yaml"))


def experiment_sources(environ: Mapping[str, str] | None = None) -> list[str]:
    """What the code location builds: the shipped experiment names, plus files named in ASSAY_EXPERIMENT_FILES
    (`assay run --config FILE` sets it); a file replaces a shipped experiment of the same name."""
    env = os.environ if environ is None else environ
    files = [part for part in env.get("ASSAY_EXPERIMENT_FILES", "").split(os.pathsep) if part]
    names = {load_experiment(path, environ=env).name: path for path in files}
    return [name for name in list_experiments() if name not in names] + list(names.values())


def env_overrides(environ: Mapping[str, str] | None = None) -> list[str]:
    """`ASSAY_*` environment variables as `--set` flags (they sit between the file and the CLI)."""
    env = os.environ if environ is None else environ
    flags = []
    for var, key in ENV_OVERRIDES.items():
        if env.get(var):
            value = env[var]
            flags.append(f"{key}=[{value}]" if key == "models" else f"{key}={value}")
    return flags


def load_experiment(
    source: str | Path,
    overrides: Iterable[str] = (),
    *,
    environ: Mapping[str, str] | None = None,
    experiments_dir: Path | None = None,
) -> ExperimentConfig:
    """Load an experiment by name or path; apply env then `--set` overrides (those not about models.*)."""
    path = Path(source) if str(source).endswith((".yaml", ".yml")) else experiment_path(str(source), experiments_dir)
    data = read_yaml(path)
    data.setdefault("name", path.stem)
    flags = [flag for flag in [*env_overrides(environ), *overrides] if not flag.startswith("models.")]
    apply_overrides(data, flags)
    return validate_as(ExperimentConfig, data, str(path), flags)
