"""Predictions, feedback and API tokens in a SQL database (SQLAlchemy 2), schema kept by Alembic migrations.

SQLite under the Assay home is the embedded default, so `assay serve` works on a bare machine; a
`postgresql+psycopg2://...` URL puts everything in PostgreSQL. :func:`open_database` upgrades the schema to
the newest migration before anything is read or written.

Tokens are never stored: a token is ``assay_<id>_<secret>``; the database keeps its id, a random salt and
SHA-256(salt + secret), and checks a presented token in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String, Text, create_engine, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from pipeline.llm.errors import ConfigError

__all__ = [
    "ROLES",
    "ApiToken",
    "Base",
    "Database",
    "Feedback",
    "IssuedToken",
    "Prediction",
    "Role",
    "default_database_url",
    "input_hash",
    "open_database",
    "voters_disagree",
]

Role = Literal["predict", "review", "admin"]
ROLES: tuple[Role, ...] = ("predict", "review", "admin")
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def _now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base of the serving tables."""


class Prediction(Base):
    """One answered text: what was asked (verbatim and hashed), what every tier said, how long it took."""

    __tablename__ = "predictions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now, index=True)
    input_hash: Mapped[str] = mapped_column(String(64), index=True)
    text: Mapped[str] = mapped_column(Text)
    prediction: Mapped[str] = mapped_column(String(200))
    """The label, or ABSTAIN."""
    confidence: Mapped[float] = mapped_column(Float)
    rule: Mapped[str] = mapped_column(String(40))
    """The tier that decided: safety, consensus, conformal, llm, abstain."""
    reason: Mapped[str] = mapped_column(Text)
    abstain_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    voter_outputs: Mapped[Any] = mapped_column(JSON)
    latency_ms: Mapped[float] = mapped_column(Float)
    model_version: Mapped[str] = mapped_column(String(64), index=True)
    token_id: Mapped[str] = mapped_column(String(32))


class Feedback(Base):
    """A reviewer's label for a prediction."""

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    prediction_id: Mapped[str] = mapped_column(ForeignKey("predictions.id"), index=True)
    label: Mapped[str] = mapped_column(String(200))
    reviewer: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class ApiToken(Base):
    """A bearer token's id, salted hash and role; revoked tokens keep their row with `revoked_at` set."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    salt: Mapped[str] = mapped_column(String(64))
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


@dataclass(frozen=True)
class IssuedToken:
    """A freshly created token: `token` is shown once and never stored."""

    token_id: str
    token: str
    role: Role


def input_hash(text: str) -> str:
    """SHA-256 of the text (UTF-8): joins repeated inputs without reading them."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _secret_hash(salt: str, secret: str) -> str:
    return hashlib.sha256((salt + secret).encode("utf-8")).hexdigest()


def default_database_url(home: Path) -> str:
    """The embedded SQLite file under the Assay home."""
    return f"sqlite:///{home / 'serve' / 'serve.db'}"


@dataclass(frozen=True)
class Database:
    """The engine and a session factory over an upgraded schema."""

    engine: Engine
    sessions: sessionmaker[Session]

    # -- tokens -------------------------------------------------------------------------------------------
    def create_token(self, name: str, role: str) -> IssuedToken:
        """Issue a token with `role`; only its salted hash is stored."""
        if role not in ROLES:
            raise ConfigError(f"token role {role!r}: expected one of {list(ROLES)}")
        token_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(24)
        salt = secrets.token_hex(16)
        with self.sessions.begin() as session:
            session.add(ApiToken(id=token_id, name=name, role=role, salt=salt, secret_hash=_secret_hash(salt, secret)))
        return IssuedToken(token_id, f"assay_{token_id}_{secret}", role)  # type: ignore[arg-type]

    def revoke_token(self, token_id: str) -> bool:
        """Revoke a token by id (the part after `assay_`); False when there is no such live token."""
        with self.sessions.begin() as session:
            row = session.get(ApiToken, token_id)
            if row is None or row.revoked_at is not None:
                return False
            row.revoked_at = _now()
            return True

    def check_token(self, token: str) -> ApiToken | None:
        """The live token row `token` belongs to, or None (unknown, malformed, wrong secret or revoked)."""
        parts = token.split("_", 2)
        if len(parts) != 3 or parts[0] != "assay":
            return None
        with self.sessions() as session:
            row = session.get(ApiToken, parts[1])
            if row is None or row.revoked_at is not None:
                return None
            if not hmac.compare_digest(row.secret_hash, _secret_hash(row.salt, parts[2])):
                return None
            session.expunge(row)
            return row

    # -- predictions and feedback -------------------------------------------------------------------------
    def add_predictions(self, rows: list[Prediction]) -> None:
        """Store predictions in one transaction (committed before the client is answered)."""
        with self.sessions.begin() as session:
            session.add_all(rows)

    def add_feedback(self, prediction_id: str, label: str, reviewer: str) -> Feedback | None:
        """Store a label for a prediction; None when the prediction does not exist."""
        with self.sessions.begin() as session:
            if session.get(Prediction, prediction_id) is None:
                return None
            row = Feedback(prediction_id=prediction_id, label=label, reviewer=reviewer)
            session.add(row)
            session.flush()
            session.expunge(row)
            return row

    def prediction(self, prediction_id: str) -> Prediction | None:
        """One prediction by id."""
        with self.sessions() as session:
            row = session.get(Prediction, prediction_id)
            if row is not None:
                session.expunge(row)
            return row

    def feedback_for(self, prediction_id: str) -> list[Feedback]:
        """Every label given to a prediction, oldest first."""
        with self.sessions() as session:
            rows = list(
                session.scalars(select(Feedback).where(Feedback.prediction_id == prediction_id).order_by(Feedback.id))
            )
            for row in rows:
                session.expunge(row)
            return rows

    # -- the review page ----------------------------------------------------------------------------------
    def review_candidates(self, limit: int) -> list[tuple[Prediction, list[Feedback]]]:
        """Up to `limit` predictions that abstained or whose voters disagree, oldest first, with their feedback."""
        found: list[tuple[Prediction, list[Feedback]]] = []
        with self.sessions() as session:
            # Disagreement lives in the voter_outputs JSON, which SQL cannot compare portably: filter in Python.
            for row in session.scalars(select(Prediction).order_by(Prediction.created_at, Prediction.id)):
                if row.prediction == "ABSTAIN" or voters_disagree(row.voter_outputs):
                    found.append((row, []))
                    if len(found) >= limit:
                        break
            by_id = {row.id: labels for row, labels in found}
            if by_id:
                query = select(Feedback).where(Feedback.prediction_id.in_(by_id)).order_by(Feedback.id)
                for feedback in session.scalars(query):
                    by_id[feedback.prediction_id].append(feedback)
            session.expunge_all()
        return found

    def recent_feedback(self, limit: int) -> list[Feedback]:
        """The newest `limit` labels, newest first."""
        with self.sessions() as session:
            rows = list(session.scalars(select(Feedback).order_by(Feedback.id.desc()).limit(limit)))
            session.expunge_all()
            return rows

    def undo_last_feedback(self, reviewer: str) -> Feedback | None:
        """Delete `reviewer`'s newest label and return it; None when they have none left."""
        with self.sessions.begin() as session:
            query = select(Feedback).where(Feedback.reviewer == reviewer).order_by(Feedback.id.desc()).limit(1)
            row = session.scalars(query).first()
            if row is None:
                return None
            session.delete(row)
            session.flush()
            session.expunge(row)
            return row


def voters_disagree(voter_outputs: Any) -> bool:
    """True when at least two voters gave different labels (abstaining voters, label None, do not count)."""
    if not isinstance(voter_outputs, dict):
        return False
    labels = {v.get("label") for v in voter_outputs.values() if isinstance(v, dict) and v.get("label") is not None}
    return len(labels) > 1


def new_prediction_id() -> str:
    """A random prediction id."""
    return str(uuid.uuid4())


def upgrade_schema(engine: Engine) -> None:
    """Run the Alembic migrations up to head on `engine` (idempotent)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def _write_ahead_log(engine: Engine) -> None:
    """SQLite in WAL mode: token lookups (readers) never wait on a prediction's commit (the writer)."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _pragmas(connection: Any, _: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.close()


def open_database(url: str) -> Database:
    """Connect to `url` (SQLite or PostgreSQL), upgrade the schema, return the session factory."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    try:
        engine = create_engine(url, pool_pre_ping=True)
    except Exception as exc:  # noqa: BLE001 - a bad URL is a config error, whatever SQLAlchemy raises
        raise ConfigError(
            f"database URL {url!r} is not usable ({exc}); expected sqlite:///<file> or "
            "postgresql+psycopg2://user@host:port/db"
        ) from None
    if engine.dialect.name == "sqlite":
        _write_ahead_log(engine)
    upgrade_schema(engine)
    return Database(engine, sessionmaker(engine, expire_on_commit=False))
