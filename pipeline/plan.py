"""The call plan: every call of an experiment run, written by `llm_calls` and read by each batch run.

Each line of call_plan.jsonl is one PlannedCall: its call_id (the Dagster partition key), the items it
answers and the full request. The plan is the only hand-off between the planning run and the batched
response runs; responses themselves live in the ResponseStore.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.calls import CallSpec

PLAN_FORMAT_VERSION = 1


@dataclass(frozen=True)
class PlannedCall:
    """One call of the plan and the items whose answers it carries."""

    spec: CallSpec
    item_ids: tuple[str, ...]

    @property
    def call_id(self) -> str:
        """The spec's call_id (also the Dagster partition key)."""
        return self.spec.call_id


@dataclass(frozen=True)
class CallPlan:
    """All calls of one run, in a stable order."""

    experiment: str
    calls: tuple[PlannedCall, ...]

    @property
    def plan_id(self) -> str:
        """Hash of the ordered call ids: the same inputs and settings give the same plan."""
        digest = hashlib.sha256("\n".join(call.call_id for call in self.calls).encode()).hexdigest()
        return digest[:16]

    @property
    def call_ids(self) -> list[str]:
        """Partition keys, in plan order."""
        return [call.call_id for call in self.calls]

    def by_id(self) -> dict[str, PlannedCall]:
        """Calls keyed by call_id."""
        return {call.call_id: call for call in self.calls}

    def save(self, path: Path) -> None:
        """Write atomically (a crash never leaves half a plan)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as handle:
            header = {"format_version": PLAN_FORMAT_VERSION, "experiment": self.experiment, "plan_id": self.plan_id}
            handle.write(json.dumps(header) + "\n")
            for call in self.calls:
                line = {"call_id": call.call_id, "item_ids": list(call.item_ids), "spec": call.spec.to_record()}
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
                f"{path} does not exist: materialize llm_calls first (assay run <experiment>)"
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
                raise ValueError(f"{path}: plan format {header.get('format_version')}, expected {PLAN_FORMAT_VERSION}")
            calls = []
            for line in handle:
                data = json.loads(line)
                spec = CallSpec.from_record(data["spec"])
                if spec.call_id != data["call_id"]:
                    raise ValueError(f"{path}: call {data['call_id']} does not hash to its id; the plan was edited")
                calls.append(PlannedCall(spec, tuple(data["item_ids"])))
        return cls(header["experiment"], tuple(calls))


_LOADED: dict[str, tuple[tuple[int, int], CallPlan]] = {}  # path -> ((mtime_ns, size), plan); plans are frozen
_LOADED_MAX = 4
