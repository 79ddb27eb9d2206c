"""The call plan of one call stage: written by its `<stage>_calls` asset and read by each batch run.

Each line is one PlannedCall: its partition key (readable: item, alias, repeat, short hash), its call_id
(the ResponseStore key), the items it answers and the full request. Keys and call ids map one to one.
The plan is the only hand-off between the planning run and the batched response runs; responses
themselves live in the ResponseStore.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from pipeline.calls import CallSpec
from pipeline.stages import partition_key

PLAN_FORMAT_VERSION = 2


@dataclass(frozen=True)
class PlannedCall:
    """One call of the plan and the items whose answers it carries."""

    spec: CallSpec
    item_ids: tuple[str, ...]
    key: str = ""
    """Dagster partition key (set by `CallPlan.build`)."""

    @property
    def call_id(self) -> str:
        """The spec's call_id (the ResponseStore key)."""
        return self.spec.call_id


@dataclass(frozen=True)
class CallPlan:
    """All calls of one run, in a stable order."""

    experiment: str
    calls: tuple[PlannedCall, ...]
    stage: str = "llm"
    inputs: dict[str, str] = field(default_factory=dict)
    """Digests of the upstream records this plan was made from (see pipeline.stages)."""

    @classmethod
    def build(
        cls, experiment: str, stage: str, calls: Sequence[PlannedCall], inputs: dict[str, str] | None = None
    ) -> CallPlan:
        """A plan with one entry per distinct call and a readable partition key for each.

        Items whose prompts are identical give one call: it is sent once and answers all of them (every
        item keeps its row). Keys get a longer hash on the rare collision of their readable part.
        """
        merged: dict[str, PlannedCall] = {}
        for call in calls:
            first = merged.get(call.call_id)
            if first is None:
                merged[call.call_id] = call
            else:
                items = tuple(dict.fromkeys((*first.item_ids, *call.item_ids)))
                merged[call.call_id] = replace(first, item_ids=items)
        keyed: list[PlannedCall] = []
        used: set[str] = set()
        for call in merged.values():
            key = ""
            for chars in (8, 12, 16, 32):
                key = partition_key(call.item_ids, call.spec.alias, call.spec.repeat, call.call_id, chars)
                if key not in used:
                    break
            used.add(key)
            keyed.append(replace(call, key=key))
        return cls(experiment, tuple(keyed), stage, dict(inputs or {}))

    @property
    def plan_id(self) -> str:
        """Hash of the ordered call ids: the same inputs and settings give the same plan."""
        digest = hashlib.sha256("\n".join(call.call_id for call in self.calls).encode()).hexdigest()
        return digest[:16]

    @property
    def call_ids(self) -> list[str]:
        """Partition keys, in plan order."""
        return [call.call_id for call in self.calls]

    @property
    def keys(self) -> list[str]:
        """Partition keys, in plan order."""
        return [call.key for call in self.calls]

    def by_id(self) -> dict[str, PlannedCall]:
        """Calls keyed by call_id."""
        return {call.call_id: call for call in self.calls}

    def by_key(self) -> dict[str, PlannedCall]:
        """Calls keyed by partition key."""
        return {call.key: call for call in self.calls}

    def save(self, path: Path) -> None:
        """Write atomically (a crash never leaves half a plan)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # unique per writer
        with tmp.open("w", encoding="utf-8") as handle:
            header = {
                "format_version": PLAN_FORMAT_VERSION,
                "experiment": self.experiment,
                "stage": self.stage,
                "plan_id": self.plan_id,
                "inputs": self.inputs,
            }
            handle.write(json.dumps(header) + "\n")
            for call in self.calls:
                line = {
                    "key": call.key,
                    "call_id": call.call_id,
                    "item_ids": list(call.item_ids),
                    "spec": call.spec.to_record(),
                }
                handle.write(json.dumps(line, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> CallPlan:
        """Read a plan; a missing file says which asset to materialize first.

        Each stage of a run reads the plan again (5,000 calls take ~0.3 s to parse and re-hash); a plan
        already read by this process is reused while its file is unchanged (same mtime and size).
        """
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{path} does not exist: materialize the stage's <stage>_calls asset first (assay run <experiment>)"
            ) from None
        key, version = str(path.resolve()), (stat.st_mtime_ns, stat.st_size)
        cached = _LOADED.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        plan = cls._read(path)
        _LOADED[key] = (version, plan)
        while len(_LOADED) > _LOADED_MAX:
            del _LOADED[next(iter(_LOADED))]
        return plan

    @classmethod
    def _read(cls, path: Path) -> CallPlan:
        with path.open(encoding="utf-8") as handle:
            header = json.loads(handle.readline())
            if header.get("format_version") != PLAN_FORMAT_VERSION:
                raise ValueError(
                    f"{path}: plan format {header.get('format_version')}, this Assay reads {PLAN_FORMAT_VERSION}; "
                    "plan again with: assay run <experiment>"
                )
            calls = []
            for line in handle:
                data = json.loads(line)
                spec = CallSpec.from_record(data["spec"])
                if spec.call_id != data["call_id"]:
                    raise ValueError(f"{path}: call {data['call_id']} does not hash to its id; the plan was edited")
                calls.append(PlannedCall(spec, tuple(data["item_ids"]), data["key"]))
        return cls(header["experiment"], tuple(calls), header.get("stage", "llm"), dict(header.get("inputs", {})))


_LOADED: dict[str, tuple[tuple[int, int], CallPlan]] = {}  # path -> ((mtime_ns, size), plan); plans are frozen
_LOADED_MAX = 4
