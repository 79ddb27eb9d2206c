"""A versioned serving artifact: a materialized ensemble's trained voters, arbiter and LLM prompt in one folder.

    <root>/<version>/bundle.joblib    the ServingBundle (voters, arbiter with its conformal thresholds, task, LLM)
    <root>/<version>/manifest.json    format_version, version, experiment, prompt version, voters, labels, created
    <root>/live                       the version being served (one line): switching versions is an edit here

The version is the SHA-256 of the bundle file's bytes, so two folders with the same version hold the same model
and a manifest can be checked against its bundle on load.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.llm.errors import ConfigError

__all__ = [
    "MANIFEST_FORMAT_VERSION",
    "LlmTierSettings",
    "LoadedArtifact",
    "Manifest",
    "ServingBundle",
    "bundle_from_run",
    "live_version",
    "load_artifact",
    "pack_artifact",
    "set_live",
]

MANIFEST_FORMAT_VERSION = 1
BUNDLE_FILE = "bundle.joblib"
MANIFEST_FILE = "manifest.json"
LIVE_FILE = "live"


@dataclass(frozen=True)
class LlmTierSettings:
    """What the server needs to ask the LLM voter about one text, exactly as the experiment asked it."""

    alias: str
    messages_prefix: tuple[dict[str, str], ...]
    """System message and few-shot turns; the question is `user_template` rendered with the text."""
    user_template: str
    min_confidence: float
    params: dict[str, Any] = field(default_factory=dict)
    """CallSpec parameters: temperature, top_p, max_tokens, response_format, seed."""

    def messages(self, text: str) -> list[dict[str, str]]:
        """The full conversation about `text`."""
        from pipeline.prompts import render

        return [*self.messages_prefix, {"role": "user", "content": render(self.user_template, {"text": text}, "user")}]


@dataclass(frozen=True)
class ServingBundle:
    """Everything a prediction needs: the cheap voters, the fitted arbiter, the task (labels, slices), the LLM."""

    experiment: str
    prompt_version: str
    task: Any
    """pipeline.ensemble.task_config.TaskConfig"""
    voters: tuple[Any, ...]
    """Trained voters (pipeline.ensemble.voter.TrainedVoter), in the arbiter's stacking order."""
    arbiter: Any
    """pipeline.ensemble.arbiter.Arbiter, calibrated (its conformal thresholds inside)."""
    llm: LlmTierSettings | None
    """None: the LLM tier is off and unsettled items abstain."""


@dataclass(frozen=True)
class Manifest:
    """The artifact's description (manifest.json)."""

    version: str
    experiment: str
    prompt_version: str
    voters: tuple[str, ...]
    labels: tuple[str, ...]
    llm_alias: str | None
    created_at: str
    format_version: int = MANIFEST_FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        """Read the JSON form; another format version is refused."""
        if data.get("format_version") != MANIFEST_FORMAT_VERSION:
            raise ConfigError(
                f"manifest format_version {data.get('format_version')!r}, this Assay reads {MANIFEST_FORMAT_VERSION}; "
                "re-pack the artifact (assay serve --pack <experiment>)"
            )
        return cls(**{**data, "voters": tuple(data["voters"]), "labels": tuple(data["labels"])})


@dataclass(frozen=True)
class LoadedArtifact:
    """A bundle read back with its manifest."""

    manifest: Manifest
    bundle: ServingBundle
    folder: Path


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pack_artifact(bundle: ServingBundle, root: Path, make_live: bool = True) -> Manifest:
    """Write `bundle` under `root/<version>/` with its manifest; point `root/live` at it unless told not to."""
    import joblib

    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    joblib.dump(bundle, staging / BUNDLE_FILE)
    version = _file_hash(staging / BUNDLE_FILE)[:16]
    manifest = Manifest(
        version=version,
        experiment=bundle.experiment,
        prompt_version=bundle.prompt_version,
        voters=tuple(v.name for v in bundle.voters),
        labels=tuple(bundle.task.label_names),
        llm_alias=bundle.llm.alias if bundle.llm else None,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    (staging / MANIFEST_FILE).write_text(json.dumps(manifest.to_json(), indent=2), encoding="utf-8")
    target = root / version
    if target.exists():
        shutil.rmtree(staging)  # same bytes, same version: already packed
    else:
        os.replace(staging, target)
    if make_live:
        set_live(root, version)
    return Manifest.from_json(json.loads((target / MANIFEST_FILE).read_text(encoding="utf-8")))


def set_live(root: Path, version: str) -> None:
    """Make `version` the one served (atomically: a reader sees the old or the new pointer)."""
    if not (root / version / MANIFEST_FILE).is_file():
        raise ConfigError(f"no artifact version {version!r} under {root}; pack one first (assay serve --pack)")
    tmp = root / f".{LIVE_FILE}.{os.getpid()}.tmp"
    tmp.write_text(version + "\n", encoding="utf-8")
    os.replace(tmp, root / LIVE_FILE)


def live_version(root: Path) -> str:
    """The version `root/live` names."""
    pointer = root / LIVE_FILE
    if not pointer.is_file():
        raise ConfigError(f"{pointer} does not exist: pack an artifact first (assay serve --pack <experiment>)")
    return pointer.read_text(encoding="utf-8").strip()


def load_artifact(root: Path, version: str | None = None) -> LoadedArtifact:
    """Load `version` (default: the live one), checking the bundle's bytes against the manifest's version."""
    import joblib

    chosen = version or live_version(root)
    folder = root / chosen
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.is_file():
        raise ConfigError(f"no artifact {chosen!r} under {root}: expected {manifest_path}; pack it first")
    manifest = Manifest.from_json(json.loads(manifest_path.read_text(encoding="utf-8")))
    actual = _file_hash(folder / BUNDLE_FILE)[:16]
    if actual != manifest.version:
        raise ConfigError(
            f"{folder / BUNDLE_FILE} hashes to {actual}, its manifest says {manifest.version}: the file was altered; "
            "re-pack the artifact"
        )
    bundle = joblib.load(folder / BUNDLE_FILE)
    if not isinstance(bundle, ServingBundle):
        raise ConfigError(f"{folder / BUNDLE_FILE} holds a {type(bundle).__name__}, not a ServingBundle; re-pack it")
    return LoadedArtifact(manifest, bundle, folder)


def bundle_from_run(experiment: str, overrides: Sequence[str] = ()) -> ServingBundle:
    """The serving bundle of a materialized `ensemble` run (its voters, fitted arbiter and LLM prompt)."""
    import joblib

    from pipeline.context import ExperimentContext
    from pipeline.ensemble.llm_voter import DEFAULT_USER_TEMPLATE
    from pipeline.ensemble.voter import load_voter
    from pipeline.experiments.ensemble import EnsembleExperiment
    from pipeline.experiments.ensemble_records import ArbiterRecord, VoterRecord
    from pipeline.experiments.ensemble_stages import FIRST, EnsembleStages

    context = ExperimentContext(experiment, overrides=list(overrides))
    kind = context.kind
    if not isinstance(kind, EnsembleExperiment):
        raise ConfigError(
            f"experiment {experiment!r} is of kind {context.config.kind!r}; only 'ensemble' runs can be served"
        )
    inputs = _RecordReader(context)
    first = inputs.record(FIRST, ArbiterRecord)
    arbiter = joblib.load(first.artifact).arbiter
    voters = []
    for name in first.voters:
        record = inputs.record(name, VoterRecord)
        voters.append(load_voter(record.artifact, expected_training_hash=record.training_hash))
    llm: LlmTierSettings | None = None
    if kind.task.voters.llm.enabled:
        few_shot = kind.few_shot(EnsembleStages(kind).splits(inputs).train)  # type: ignore[arg-type]
        prefix = kind.llm_messages("", few_shot)[:-1]  # the question itself is rendered per request
        params = context.config.params
        llm = LlmTierSettings(
            alias=context.aliases()[0],
            messages_prefix=tuple(prefix),
            user_template=context.config.prompts.user or DEFAULT_USER_TEMPLATE,
            min_confidence=kind.task.voters.llm.min_confidence,
            params={
                "temperature": params.temperature,
                "top_p": params.top_p,
                "max_tokens": params.max_tokens,
                "response_format": kind.response_format(),
                "seed": params.seed,
            },
        )
    return ServingBundle(experiment, kind.prompts.version, kind.task, tuple(voters), arbiter, llm)


@dataclass(frozen=True)
class _RecordReader:
    """The part of StageInputs the ensemble's stage helpers read: the context and materialized records."""

    context: Any

    def record(self, name: str, record_class: type[Any]) -> Any:
        from pipeline.stages import load_record

        return load_record(self.context.record_path(name), record_class).record
