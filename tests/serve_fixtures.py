"""A tiny served ensemble for the API tests: the bird-flu task's 40 items, rules + classical voters (seconds)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from pipeline.serving.app import ServeSettings, create_app
from pipeline.serving.artifact import LlmTierSettings, ServingBundle, load_artifact, pack_artifact
from pipeline.serving.predictor import LlmAsker, Predictor
from pipeline.serving.storage import Database, open_database

SETTLED_TEXT = "Officials confirmed H5N1 in a commercial turkey flock in Minnesota on Tuesday."


def tiny_bundle() -> ServingBundle:
    """The bird-flu ensemble without the weak-supervision voter (which needs torch), LLM tier on the `fake` alias."""
    from pipeline.ensemble.build import fit_ensemble, load_task_splits
    from pipeline.ensemble.llm_voter import llm_answer_schema, llm_voter_messages
    from pipeline.ensemble.task_config import load_task_config

    task = load_task_config("birdflu")
    voters = task.voters.model_copy(
        update={"weak_supervision": task.voters.weak_supervision.model_copy(update={"enabled": False})}
    )
    task = task.model_copy(update={"voters": voters})
    fitted = fit_ensemble(task, load_task_splits(task))
    prefix = llm_voter_messages("", task.label_names, (), task.description)[:-1]
    schema = {"type": "json_schema", "json_schema": {"name": "llm_vote", "schema": llm_answer_schema(task.label_names)}}
    llm = LlmTierSettings("fake", tuple(prefix), "Text: {text}", 0.8, {"max_tokens": 64, "response_format": schema})
    return ServingBundle("birdflu-tiny", "test-prompts", task, fitted.voters, fitted.arbiter, llm)


def relevant_responder(request: dict[str, Any]) -> str:
    """The LLM voter's answer: relevant at 0.95 for anything mentioning birds, else irrelevant."""
    text = str(request["messages"][-1]["content"]).lower()
    label = "relevant" if any(w in text for w in ("bird", "flu", "h5", "poultry", "duck")) else "irrelevant"
    return json.dumps({"label": label, "confidence": 0.95, "reason": "keyword"})


@dataclass
class Served:
    """A TestClient over the app, its database and a token per role."""

    client: TestClient
    database: Database
    tokens: dict[str, str]
    predictor: Predictor

    def headers(self, role: str = "predict") -> dict[str, str]:
        """Authorization header for `role`."""
        return {"Authorization": f"Bearer {self.tokens[role]}"}


@contextmanager
def serve(
    artifact_root: Path,
    database_url: str,
    asker: LlmAsker | None = None,
    settings: ServeSettings | None = None,
    llm_timeout_s: float = 5.0,
) -> Iterator[Served]:
    """The app over the live artifact under `artifact_root`, with one fresh token per role."""
    database = open_database(database_url)
    predictor = Predictor(load_artifact(artifact_root), asker, llm_timeout_s)
    app = create_app(predictor, database, settings)
    tokens = {role: database.create_token(f"test-{role}", role).token for role in ("predict", "review", "admin")}
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Served(client, database, tokens, predictor)
    database.engine.dispose()


def pack_tiny(root: Path) -> str:
    """Pack the tiny bundle under `root` as the live version; returns the version."""
    return pack_artifact(tiny_bundle(), root).version


def run(coro: Any) -> Any:
    """Run a coroutine to completion."""
    return asyncio.run(coro)
