"""Stages: what an experiment kind declares, and the graph the asset factory and the launcher walk.

A kind (pipeline/experiments/) returns a list of stages; nothing else about it is known to Dagster.

- A **data stage** is a pure function of upstream records: it reads them through `StageInputs` and
  returns its own record (a typed, versioned object that can save itself), which the stage framework
  writes under the experiment's work folder. Source, extraction, evaluation and the report are data stages.
- A **call stage** turns upstream records into planned LLM calls. It becomes two assets: `<name>_calls`
  (the plan, one dynamic partition per call, the budget check) and `<name>_responses` (one partition per
  call, each response durable in the ResponseStore). Downstream stages read its answers as
  `StageResponses`: the plan and the store, nothing copied.

Every record carries a digest of its content; a call plan remembers the digests of the records it was
planned from, so a downstream stage can tell a plan made from other inputs (a stale plan) from the current.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, TypeVar

from pipeline.llm.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.context import ExperimentContext
    from pipeline.plan import CallPlan
    from pipeline.store import ResponseStore, StoredResponse

StageRole = Literal["source", "data", "analysis", "report"]


class StageRecord(Protocol):
    """What a data stage returns: a record that knows its file format."""

    record_type: ClassVar[str]
    format_version: ClassVar[int]

    def to_json(self) -> dict[str, Any]:
        """The record as JSON-able data (without the envelope)."""
        ...

    def metadata(self) -> dict[str, Any]:
        """A few figures shown on the asset's materialization (rows, counts, paths)."""
        ...


R = TypeVar("R", bound=StageRecord)


@dataclass(frozen=True)
class CheckVerdict:
    """What a stage check found: passed or not, the figures behind it (observed value, threshold, items)."""

    passed: bool
    metadata: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    """One line shown when it fails: what was found and what was expected."""


@dataclass(frozen=True)
class StageCheck:
    """A check of a data stage's record, run after the stage (an asset check in Dagster).

    Attributes:
        name: the check's name (unique within the stage).
        evaluate: reads the stage's record (and any upstream one) and returns a CheckVerdict.
        description: one line, shown in the Dagster UI.
        blocking: True stops downstream stages of the same run when it fails.
    """

    name: str
    evaluate: Callable[[StageInputs], CheckVerdict]
    description: str
    blocking: bool = False


@dataclass(frozen=True)
class DataStage:
    """A pure function of upstream records.

    Attributes:
        name: asset name (also the record's file name).
        deps: names of the stages it reads.
        compute: builds the record from the inputs.
        record_class: the type `compute` returns (has `from_json`).
        description: one line, shown in the Dagster UI.
        role: 'source' (gets an input check), 'analysis' (the report depends on it), 'report', or 'data'.
        checks: checks of the record, each an asset check on the stage's asset.
    """

    name: str
    deps: tuple[str, ...]
    compute: Callable[[StageInputs], Any]
    record_class: type[Any]
    description: str
    role: StageRole = "data"
    checks: tuple[StageCheck, ...] = ()


@dataclass(frozen=True)
class CallStage:
    """LLM calls planned from upstream records; see the module docstring.

    Attributes:
        name: stage name; its assets are `<name>_calls` and `<name>_responses`.
        deps: names of the stages its plan reads.
        plan: builds the calls (a CallPlan) from the inputs.
        description: one line, shown in the Dagster UI.
    """

    name: str
    deps: tuple[str, ...]
    plan: Callable[[StageInputs], CallPlan]
    description: str

    @property
    def plan_asset(self) -> str:
        """Asset holding the plan (and registering the partitions)."""
        return f"{self.name}_calls"

    @property
    def responses_asset(self) -> str:
        """Partitioned asset: one materialization per stored call."""
        return f"{self.name}_responses"


Stage = DataStage | CallStage


@dataclass(frozen=True)
class Segment:
    """Assets that run together in one Dagster run, before a call stage's calls (or after the last)."""

    name: str
    assets: tuple[str, ...]
    call_stage: CallStage | None  # the stage whose calls follow this segment; None = the final analysis


@dataclass(frozen=True)
class StageGraph:
    """The stages of one experiment, checked and ordered."""

    stages: tuple[Stage, ...]

    def __post_init__(self) -> None:
        names = [stage.name for stage in self.stages]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ConfigError(f"stage names must be unique; repeated: {', '.join(duplicates)}")
        known = set(names)
        for stage in self.stages:
            for dep in stage.deps:
                if dep not in known:
                    raise ConfigError(
                        f"stage {stage.name!r} depends on unknown stage {dep!r}; known: {', '.join(sorted(known))}"
                    )
        self.ordered()  # raises on a cycle

    def get(self, name: str) -> Stage:
        """The stage called `name`."""
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)

    def ordered(self) -> list[Stage]:
        """Stages in dependency order (declaration order among independent ones)."""
        done: list[Stage] = []
        placed: set[str] = set()
        pending = list(self.stages)
        while pending:
            ready = [stage for stage in pending if set(stage.deps) <= placed]
            if not ready:
                cycle = ", ".join(stage.name for stage in pending)
                raise ConfigError(f"the stages {cycle} depend on each other in a cycle")
            for stage in ready:
                done.append(stage)
                placed.add(stage.name)
                pending.remove(stage)
        return done

    @property
    def call_stages(self) -> list[CallStage]:
        """Call stages in dependency order."""
        return [stage for stage in self.ordered() if isinstance(stage, CallStage)]

    def asset_name(self, stage_name: str) -> str:
        """The asset a downstream stage depends on: a data stage's own, a call stage's responses."""
        stage = self.get(stage_name)
        return stage.responses_asset if isinstance(stage, CallStage) else stage.name

    def segments(self) -> list[Segment]:
        """Runs of unpartitioned assets: the ones each call stage needs first, then everything left.

        `assay run` executes segment 1, the first call stage's calls, segment 2, ... and the final segment.
        """
        upstream: dict[str, set[str]] = {}
        for stage in self.ordered():
            direct = {self.asset_name(dep) for dep in stage.deps}
            below = set(direct)
            for asset in direct:
                below |= upstream.get(asset, set())
            if isinstance(stage, CallStage):
                upstream[stage.plan_asset] = below
                upstream[stage.responses_asset] = below | {stage.plan_asset}
            else:
                upstream[stage.name] = below
        order = [asset for stage in self.ordered() for asset in _assets_of(stage)]
        responses = {stage.responses_asset for stage in self.call_stages}
        taken: set[str] = set()
        segments: list[Segment] = []
        for stage in self.call_stages:
            needed = (upstream[stage.plan_asset] | {stage.plan_asset}) - responses - taken
            assets = tuple(asset for asset in order if asset in needed)
            taken |= needed
            segments.append(Segment(stage.name, assets, stage))
        rest = tuple(asset for asset in order if asset not in taken and asset not in responses)
        segments.append(Segment("analysis", rest, None))
        return segments


def _assets_of(stage: Stage) -> list[str]:
    return [stage.plan_asset, stage.responses_asset] if isinstance(stage, CallStage) else [stage.name]


# ---------------------------------------------------------------------------------------------------------
# Reading and writing stage records

RECORD_ENVELOPE_VERSION = 1


def record_digest(payload: Mapping[str, Any]) -> str:
    """Content hash of a record's JSON payload (sorted keys): equal records have equal digests."""
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def save_record(path: Path, record: StageRecord) -> str:
    """Write `record` atomically in its envelope (type, format version, digest); returns the digest.

    The temporary file name is unique per writer (pid), so two processes never share one.
    """
    payload = record.to_json()
    digest = record_digest(payload)
    envelope = {
        "envelope_version": RECORD_ENVELOPE_VERSION,
        "record_type": record.record_type,
        "format_version": record.format_version,
        "digest": digest,
        "data": payload,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(envelope, ensure_ascii=False, default=str), encoding="utf-8")
    os.replace(tmp, path)
    return digest


@dataclass(frozen=True)
class LoadedRecord:
    """A record read back, with the digest it was saved under."""

    record: Any
    digest: str


def load_record(path: Path, record_class: type[Any]) -> LoadedRecord:
    """Read a record written by `save_record`; a missing file names the asset to materialize first."""
    try:
        envelope = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} does not exist: materialize stage {path.stem!r} first (assay run <experiment>)"
        ) from None
    expected_type = record_class.record_type
    if envelope.get("record_type") != expected_type:
        raise ValueError(f"{path}: holds a {envelope.get('record_type')!r} record, expected {expected_type!r}")
    version = envelope.get("format_version")
    if version != record_class.format_version:
        raise ValueError(
            f"{path}: {expected_type} format {version}, this Assay reads {record_class.format_version}; "
            "re-run the stage (assay run <experiment>)"
        )
    return LoadedRecord(record_class.from_json(envelope["data"]), envelope["digest"])


@dataclass(frozen=True)
class StageResponses:
    """A call stage's answers as downstream stages see them: its plan and the store.

    `answer(call_id)` follows a substitution: when a fallback model answered, its record is stored under its
    own call id and the planned call points at it (see ResponseStore.get_answer).
    """

    plan: CallPlan
    store: ResponseStore
    current: bool = True
    """False when the plan was made from other inputs than the current ones (a stale plan: ignore it)."""

    def answer(self, call_id: str) -> StoredResponse | None:
        """The stored answer of a planned call (the fallback's, if a fallback answered), or None."""
        return self.store.get_answer(call_id)

    def answers(self) -> dict[str, StoredResponse | None]:
        """Every planned call's answer (None = not answered)."""
        return {call.call_id: self.answer(call.call_id) for call in self.plan.calls}


@dataclass
class StageInputs:
    """What a stage function may read: the experiment context and its upstream stages' records."""

    context: ExperimentContext
    graph: StageGraph
    run_id: str | None = None
    """The orchestrator's run id, recorded in reports (None outside a run)."""
    _cache: dict[str, Any] = field(default_factory=dict)

    def record(self, stage_name: str, record_class: type[R]) -> R:
        """The latest record of data stage `stage_name`."""
        loaded = self._loaded(stage_name, record_class)
        record: R = loaded.record
        return record

    def digest(self, stage_name: str) -> str:
        """Digest of the current record (data stage) or plan (call stage) of `stage_name`."""
        stage = self.graph.get(stage_name)
        if isinstance(stage, CallStage):
            return self.responses(stage_name).plan.plan_id
        loaded: LoadedRecord = self._loaded(stage_name, stage.record_class)
        return loaded.digest

    def responses(self, stage_name: str, *, required: bool = True) -> StageResponses:
        """The answers of call stage `stage_name` (an empty plan when it has none and not `required`)."""
        from pipeline.plan import CallPlan

        key = f"responses:{stage_name}"
        if key not in self._cache:
            stage = self.graph.get(stage_name)
            assert isinstance(stage, CallStage), f"{stage_name} is not a call stage"
            path = self.context.plan_path(stage_name)
            if not path.exists() and not required:
                plan = CallPlan(self.context.config.name, (), stage=stage_name)
                self._cache[key] = StageResponses(plan, self.context.store, current=False)
            else:
                plan = CallPlan.load(path)
                current = all(self._current_digest(dep) == digest for dep, digest in plan.inputs.items())
                self._cache[key] = StageResponses(plan, self.context.store, current=current)
        responses: StageResponses = self._cache[key]
        return responses

    def _current_digest(self, stage_name: str) -> str | None:
        try:
            return self.digest(stage_name)
        except (FileNotFoundError, KeyError):
            return None

    def input_digests(self, stage_names: Iterable[str]) -> dict[str, str]:
        """Digests of the named upstream stages, to remember in a plan."""
        return {name: self.digest(name) for name in stage_names}

    def _loaded(self, stage_name: str, record_class: type[Any]) -> LoadedRecord:
        key = f"record:{stage_name}"
        if key not in self._cache:
            self._cache[key] = load_record(self.context.record_path(stage_name), record_class)
        loaded: LoadedRecord = self._cache[key]
        return loaded


def run_data_stage(context: ExperimentContext, stage: DataStage, run_id: str | None = None) -> Any:
    """Compute a data stage from its inputs and save its record; returns the record."""
    record = stage.compute(StageInputs(context, context.graph, run_id))
    save_record(context.record_path(stage.name), record)
    return record


# ---------------------------------------------------------------------------------------------------------
# Partition keys a person can read

_UNSAFE = re.compile(r"[^A-Za-z0-9_:+-]+")
ITEM_PART_MAX = 48


def partition_key(item_ids: Sequence[str], alias: str, repeat: int, call_id: str, hash_chars: int = 8) -> str:
    """`<item>.<alias>.r<repeat>.<hash>`: the UI's partition filter finds an item's calls by its id.

    Several items in one call read `<first>+<n-1>`. Characters Dagster or a URL would choke on become '_';
    the call_id prefix keeps keys unique (the plan lengthens it on the rare collision).
    """
    first = _UNSAFE.sub("_", item_ids[0] if item_ids else "none")[:ITEM_PART_MAX] or "_"
    item = first if len(item_ids) <= 1 else f"{first}+{len(item_ids) - 1}"
    return f"{item}.{_UNSAFE.sub('_', alias)}.r{repeat}.{call_id[:hash_chars]}"
