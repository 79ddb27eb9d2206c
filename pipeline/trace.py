"""Find one call by its call id or its partition key, and show its stored record and every attempt.

`assay trace <call id or partition key>` prints what `render_trace` returns; the Dagster materialization of
each call partition names that command (assets/stage_assets.py, `call_metadata`). A partition key is looked up
in the call plans under `.assay/work/<experiment>/stages/<stage>/plan.jsonl`; a call id (or a prefix of at
least 8 characters of a planned one) directly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.llm.errors import ConfigError
from pipeline.plan import CallPlan, PlannedCall
from pipeline.store import ResponseStore, StoredResponse

MIN_PREFIX = 8


@dataclass(frozen=True)
class TracedCall:
    """A call found by `find_call`: where it is planned (if it is), its record and its attempts."""

    call_id: str
    experiment: str | None
    stage: str | None
    planned: PlannedCall | None
    record: StoredResponse | None
    """The stored answer (a fallback model's, when one answered); None when the call has no answer."""
    attempts: tuple[dict[str, Any], ...]
    """The trace of the planned call, then that of the fallback's call if another one answered."""


def _plans(work: Path, experiment: str | None) -> list[tuple[str, str, Path]]:
    folders = [work / experiment] if experiment else sorted(path for path in work.glob("*") if path.is_dir())
    return [
        (folder.name, path.parent.name, path)
        for folder in folders
        for path in sorted((folder / "stages").glob("*/plan.jsonl"))
    ]


def find_call(home: Path, query: str, experiment: str | None = None) -> TracedCall:
    """The call whose id, partition key or id prefix is `query` (plans of `experiment`, or of every one)."""
    query = query.strip()
    store = ResponseStore(home / "store")
    matches: dict[str, tuple[str, str, PlannedCall]] = {}
    for name, stage, path in _plans(home / "work", experiment):
        for call in CallPlan.load(path).calls:
            if query in (call.key, call.call_id) or (len(query) >= MIN_PREFIX and call.call_id.startswith(query)):
                matches.setdefault(call.call_id, (name, stage, call))
    if len(matches) > 1:
        found = ", ".join(f"{name}/{stage}/{call.key}" for name, stage, call in list(matches.values())[:5])
        raise ConfigError(f"{query!r} matches {len(matches)} calls ({found}); give the whole call id or key")
    if matches:
        [(call_id, (name, stage, planned))] = matches.items()
        return _traced(store, call_id, name, stage, planned)
    if store.get(query) is not None or store.read_trace(query):
        return _traced(store, query, None, None, None)
    where = f"the plans of {experiment}" if experiment else "any plan under " + str(home / "work")
    raise ConfigError(
        f"no call {query!r} in {where} or the store; give a call id or a partition key as the Dagster UI shows it "
        "(e.g. h1.fake.r0.0123abcd), and --experiment NAME if it belongs to another Assay home"
    )


def _traced(
    store: ResponseStore, call_id: str, experiment: str | None, stage: str | None, planned: PlannedCall | None
) -> TracedCall:
    record = store.get_answer(call_id)
    attempts = store.read_trace(call_id)
    if record is not None and record.call_id != call_id:
        attempts += store.read_trace(record.call_id)
    return TracedCall(call_id, experiment, stage, planned, record, tuple(attempts))


def render_trace(traced: TracedCall) -> str:
    """The call as text: where it is planned, model, usage, cost, the request, the answer, every attempt."""
    where = f" ({traced.experiment} / {traced.stage}, partition {traced.planned.key})" if traced.planned else ""
    lines = [f"call {traced.call_id}{where}"]
    record = traced.record
    request: dict[str, Any] = record.request if record is not None else {}
    if not request and traced.planned is not None:
        request = traced.planned.spec.to_record()
    if record is None:
        lines.append("answer: none stored (the call failed or has not run): assay resume <experiment>")
    else:
        if record.call_id != traced.call_id:
            lines.append(f"answered by the fallback call {record.call_id} (alias {record.alias_used})")
        usage = record.usage
        lines += [
            f"model: {record.model_used} (alias {record.alias_used}, version {request.get('version')})",
            f"usage: {usage.get('prompt_tokens', 0)} prompt + {usage.get('completion_tokens', 0)} completion tokens, "
            f"cost ${record.cost_usd:.6f}, latency {record.latency_s:.3f} s, {record.attempts} attempt(s)",
            f"started {record.started_at}, finished {record.finished_at}",
        ]
    if request:
        params = {key: request.get(key) for key in ("temperature", "top_p", "max_tokens", "seed", "repeat")}
        lines += [
            "request: " + ", ".join(f"{key}={value}" for key, value in params.items() if value is not None),
            *[f"  [{message.get('role')}] {message.get('content')}" for message in request.get("messages", [])],
        ]
        if request.get("response_format"):
            lines.append(f"  response_format: {json.dumps(request['response_format'])}")
    if record is not None:
        lines += ["answer:", f"  {record.text}"]
    lines.append(f"attempts ({len(traced.attempts)} in the trace):")
    for index, event in enumerate(traced.attempts, start=1):
        detail = " ".join(f"{key}={value}" for key, value in event.items() if value not in (None, ""))
        lines.append(f"  {index}. {detail}")
    return "\n".join(lines)
