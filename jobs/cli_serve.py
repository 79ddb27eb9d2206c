"""`assay serve` (the prediction API) and `assay tokens create|revoke` (its bearer tokens)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pipeline.config import assay_home

DATABASE_ENV = "ASSAY_SERVE_DATABASE_URL"
"""A SQLAlchemy URL (e.g. postgresql+psycopg2://postgres@127.0.0.1:5432/test); default: SQLite in the Assay home."""


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register `serve` and `tokens` on the `assay` parser."""
    serve = sub.add_parser("serve", help="serve the live ensemble artifact over HTTP (FastAPI under uvicorn)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--artifact", help="artifact folder (default: <assay home>/serve/artifacts)")
    serve.add_argument("--version", help="serve this version instead of the live one")
    serve.add_argument("--pack", metavar="EXPERIMENT", help="pack a materialized ensemble run as the live version")
    serve.add_argument("--database", help=f"database URL (default: ${DATABASE_ENV}, else SQLite in the Assay home)")
    serve.add_argument("--llm-timeout", type=float, default=5.0, help="seconds the LLM tier may take (then abstain)")
    serve.add_argument("--rate", type=float, default=600.0, help="requests per minute per token")
    serve.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides for --pack")

    tokens = sub.add_parser("tokens", help="create or revoke the API's bearer tokens")
    tokens_sub = tokens.add_subparsers(dest="tokens_command", required=True)
    create = tokens_sub.add_parser("create", help="issue a token (printed once; only its salted hash is stored)")
    create.add_argument("--role", choices=("predict", "review", "admin"), required=True)
    create.add_argument("--name", default="", help="who or what holds it (the default reviewer name)")
    create.add_argument("--database")
    revoke = tokens_sub.add_parser("revoke", help="revoke a token by its id (the part after 'assay_')")
    revoke.add_argument("token_id")
    revoke.add_argument("--database")


def run(args: argparse.Namespace) -> int | None:
    """Run a serving command; None when `args` is not one."""
    if args.command == "serve":
        return _serve(args)
    if args.command == "tokens":
        from pipeline.serving.storage import open_database

        database = open_database(database_url(args.database))
        if args.tokens_command == "create":
            issued = database.create_token(args.name or args.role, args.role)
            print(f"token id {issued.token_id} ({issued.role}); the token, shown only now:")
            print(issued.token)
            return 0
        if database.revoke_token(args.token_id):
            print(f"revoked token {args.token_id}")
            return 0
        print(f"assay: no live token with id {args.token_id!r}; `assay tokens create` lists the id it issues")
        return 1
    return None


def database_url(flag: str | None) -> str:
    """--database, else $ASSAY_SERVE_DATABASE_URL, else SQLite under the Assay home."""
    from pipeline.serving.storage import default_database_url

    return flag or os.environ.get(DATABASE_ENV) or default_database_url(assay_home())


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from pipeline.config import load_model_zoo
    from pipeline.llm.client import LLMClient
    from pipeline.serving.app import ServeSettings, create_app
    from pipeline.serving.artifact import bundle_from_run, load_artifact, pack_artifact
    from pipeline.serving.predictor import Predictor, client_asker
    from pipeline.serving.storage import open_database
    from pipeline.store import ResponseStore

    root = Path(args.artifact) if args.artifact else assay_home() / "serve" / "artifacts"
    if args.pack:
        from jobs.cli import saved_overrides

        # The run's own flags (--model, --limit, --set) first: the bundle must match what was materialized.
        manifest = pack_artifact(bundle_from_run(args.pack, [*saved_overrides(args.pack), *args.set]), root)
        print(f"packed {args.pack} as version {manifest.version} (live) under {root}")
    artifact = load_artifact(root, args.version)
    database = open_database(database_url(args.database))
    client = None
    asker = None
    if artifact.bundle.llm is not None:
        client = LLMClient(load_model_zoo(overrides=args.set), ResponseStore(assay_home() / "store"))
        asker = client_asker(client, artifact.bundle.llm.alias)
    predictor = Predictor(artifact, asker, args.llm_timeout)
    app = create_app(predictor, database, ServeSettings(rate_per_minute=args.rate))
    print(
        f"serving {artifact.manifest.experiment} version {artifact.manifest.version} on http://{args.host}:{args.port}"
    )
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        if client is not None:
            client.close()
    return 0
