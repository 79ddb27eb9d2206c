"""The embedded Dagster instance: SQLite under `.assay/dagster_home`, created on first use.

Dagster's stock SQLite event log opens a new engine, a new connection and an fsync'ed transaction for every
event, several times per event: ~50 ms per call partition on this kind of disk, which would make Dagster's
bookkeeping slower than the LLM calls it records. `AssaySqliteEventLogStorage` is Dagster's consolidated
SQLite event log with three changes:
- one pooled engine, WAL with `synchronous=NORMAL` (no fsync per commit);
- asset events (one materialization per call, one planned event per partition of a range run) are
  buffered and written in one transaction per batch: flushed before any other event of the run, at
  BATCH_SIZE events, and at most FLUSH_INTERVAL_S after the first buffered one.
What this risks: a SIGKILL or power cut can lose the last fraction of a second of *bookkeeping* events,
never a response. Responses are fsync'ed by the ResponseStore before an event is even created, and
`assay resume` re-records a stored call whose materialization event was lost (from the store, no call).
Measured by benchmarks/pipeline_overhead.py.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dagster import DagsterInstance
from dagster._core.events import DagsterEventType
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.sqlite.consolidated_sqlite_event_log import (
    ConsolidatedSqliteEventLogStorage,
)
from dagster_postgres.event_log import PostgresEventLogStorage
from sqlalchemy import create_engine
from sqlalchemy import event as sqlalchemy_event
from sqlalchemy.engine import Engine

from pipeline.config import assay_home

SQLITE_BUSY_TIMEOUT_S = 120
BATCH_SIZE = 500
FLUSH_INTERVAL_S = 0.25
BUFFERED_EVENT_TYPES = frozenset(
    {
        DagsterEventType.ASSET_MATERIALIZATION,
        DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
        DagsterEventType.ASSET_OBSERVATION,
    }
)


def _set_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class BufferedAssetEvents:
    """Mixin for a SQL event log storage: asset events are buffered and written one transaction per batch.

    The storage class it is mixed into must give `_batch_engine()` (an Engine whose connections can hold a
    transaction) and `_plain_connect()` (its usual connection context).
    """

    def _setup_buffer(self) -> None:
        self._pending: list[EventLogEntry] = []
        self._pending_lock = threading.Lock()  # guards the list only: appending never waits for a flush
        self._write_lock = threading.RLock()  # serializes database writes
        self._flush_timer: threading.Timer | None = None
        self._batch = threading.local()  # the connection of the batch being written, per thread
        atexit.register(self.flush)

    def _batch_engine(self) -> Engine:
        raise NotImplementedError

    def _plain_connect(self) -> Any:
        raise NotImplementedError

    @contextmanager
    def _connect(self) -> Iterator[Any]:
        batch_connection = getattr(self._batch, "connection", None)
        if batch_connection is not None:  # inside flush(): every statement joins the batch's transaction
            yield batch_connection
            return
        with self._plain_connect() as connection:
            yield connection

    def store_event(self, event: EventLogEntry) -> None:
        """Buffer asset events; store anything else at once, after the buffer (order is kept)."""
        if event.is_dagster_event and event.dagster_event_type in BUFFERED_EVENT_TYPES:
            with self._pending_lock:
                self._pending.append(event)
                full = len(self._pending) >= BATCH_SIZE
                if not full and self._flush_timer is None:
                    self._flush_timer = threading.Timer(FLUSH_INTERVAL_S, self.flush)
                    self._flush_timer.daemon = True
                    self._flush_timer.start()
            if full:
                self.flush()
            return
        with self._write_lock:
            self.flush()
            super().store_event(event)  # type: ignore[misc]

    def _has_asset_key_col_on_connection(self, conn: Any, column_name: str) -> bool:
        # Dagster reflects the asset_keys table for every asset event (~0.25 ms each); its columns only
        # change by `dagster instance migrate`, which is run with no Assay process on the instance.
        cache: dict[str, bool] = self.__dict__.setdefault("_asset_key_columns", {})
        if column_name not in cache:
            cache[column_name] = super()._has_asset_key_col_on_connection(conn, column_name)  # type: ignore[misc]
        return cache[column_name]

    def store_event_batch(self, events: Any) -> None:
        """Dagster's batch entry point (planned events): same buffering."""
        for event in events:
            self.store_event(event)

    def flush(self) -> None:
        """Write buffered asset events in one transaction."""
        with self._write_lock:
            with self._pending_lock:
                if self._flush_timer is not None:
                    self._flush_timer.cancel()
                    self._flush_timer = None
                pending, self._pending = self._pending, []
            if not pending:
                return
            with self._batch_engine().connect() as connection, connection.begin():
                self._batch.connection = connection
                try:
                    for event in pending:
                        super().store_event(event)  # type: ignore[misc]
                finally:
                    self._batch.connection = None

    def dispose(self) -> None:
        self.flush()
        super().dispose()  # type: ignore[misc]


class AssaySqliteEventLogStorage(BufferedAssetEvents, ConsolidatedSqliteEventLogStorage):
    """Consolidated SQLite event log: pooled engine, WAL/synchronous=NORMAL, batched asset events."""

    def __init__(self, base_dir: str, inst_data: Any = None) -> None:
        self._engine: Engine | None = None
        self._engine_lock = threading.Lock()
        self._setup_buffer()
        super().__init__(base_dir, inst_data)

    @classmethod
    def from_config_value(cls, inst_data: Any, config_value: Any) -> AssaySqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)

    def _batch_engine(self) -> Engine:
        with self._engine_lock:
            if self._engine is None:
                self._engine = create_engine(
                    self._conn_string,
                    pool_size=1,
                    max_overflow=8,
                    connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False},
                )
                sqlalchemy_event.listen(self._engine, "connect", _set_pragmas)
            return self._engine

    @contextmanager
    def _plain_connect(self) -> Iterator[Any]:
        with self._batch_engine().connect() as connection, connection.begin():
            yield connection

    def dispose(self) -> None:
        super().dispose()
        if self._engine is not None:
            self._engine.dispose()


class AssayPostgresEventLogStorage(BufferedAssetEvents, PostgresEventLogStorage):
    """dagster-postgres' event log with batched asset events (one transaction per batch)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._setup_buffer()
        super().__init__(*args, **kwargs)

    @classmethod
    def from_config_value(cls, inst_data: Any, config_value: Any) -> Any:
        # dagster-postgres builds its own class by name here, so the subclass must build itself.
        from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config

        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )

    def _batch_engine(self) -> Engine:
        return self._engine

    def _plain_connect(self) -> Any:
        return PostgresEventLogStorage._connect(self)


LOCAL_POSTGRES_ENV = {
    "ASSAY_PG_HOST": "127.0.0.1",
    "ASSAY_PG_PORT": "5432",
    "ASSAY_PG_USER": "postgres",
    "ASSAY_PG_PASSWORD": "",
    "ASSAY_PG_DB": "test",
}
"""Settings for configs/dagster/postgres.yaml on a local server with trust auth (tests, benchmarks)."""


def sqlite_instance_yaml(home: Path) -> str:
    """dagster.yaml of the embedded instance."""
    storage = home / "storage"
    return f"""# Written by Assay on first use (jobs/instance.py). Safe to edit; delete to regenerate.
run_storage:
  module: dagster._core.storage.runs
  class: SqliteRunStorage
  config:
    base_dir: {storage}
event_log_storage:
  module: jobs.instance
  class: AssaySqliteEventLogStorage
  config:
    base_dir: {storage}
schedule_storage:
  module: dagster._core.storage.schedules
  class: SqliteScheduleStorage
  config:
    base_dir: {storage}
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 4
telemetry:
  enabled: false
"""


def ensure_dagster_home() -> Path:
    """DAGSTER_HOME if set, else `<assay home>/dagster_home` with a dagster.yaml written on first use."""
    if os.environ.get("DAGSTER_HOME"):
        return Path(os.environ["DAGSTER_HOME"])
    home = assay_home() / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(sqlite_instance_yaml(home))
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def get_instance() -> DagsterInstance:
    """The instance named by DAGSTER_HOME (the embedded SQLite one unless the user points elsewhere)."""
    ensure_dagster_home()
    return DagsterInstance.get()
