"""The embedded Dagster instance: SQLite under `.assay/dagster_home`, created on first use.

Dagster's stock SQLite event log opens a new engine, a new connection and an fsync'ed transaction for every
event, several times per event: ~50 ms per call partition on this kind of disk, which would make Dagster's
bookkeeping slower than the LLM calls it records. `AssaySqliteEventLogStorage` is Dagster's consolidated
SQLite event log with one pooled engine and `synchronous=NORMAL` in WAL mode: a process crash loses
nothing, a power cut may lose the last few bookkeeping events, never a response (responses are fsync'ed
by the ResponseStore, and a lost event is repaired by `assay resume`). Measured by benchmarks/pipeline_overhead.py.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dagster import DagsterInstance
from dagster._core.storage.event_log.sqlite.consolidated_sqlite_event_log import (
    ConsolidatedSqliteEventLogStorage,
)
from dagster._core.storage.sqlite import create_db_conn_string  # noqa: F401 - documents the URL scheme used
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine

from pipeline.config import REPO_ROOT

SQLITE_BUSY_TIMEOUT_S = 120


def assay_home() -> Path:
    """Root of Assay's local state: $ASSAY_HOME, else `.assay` in the repository."""
    return Path(os.environ.get("ASSAY_HOME") or REPO_ROOT / ".assay").resolve()


def _set_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class AssaySqliteEventLogStorage(ConsolidatedSqliteEventLogStorage):
    """Consolidated SQLite event log with a pooled engine and WAL/synchronous=NORMAL (see module doc)."""

    def __init__(self, base_dir: str, inst_data: Any = None) -> None:
        self._engine: Engine | None = None
        self._engine_lock = threading.Lock()
        super().__init__(base_dir, inst_data)

    @classmethod
    def from_config_value(cls, inst_data: Any, config_value: Any) -> AssaySqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)

    def _pooled_engine(self) -> Engine:
        with self._engine_lock:
            if self._engine is None:
                self._engine = create_engine(
                    self._conn_string,
                    pool_size=1,
                    max_overflow=8,
                    connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False},
                )
                event.listen(self._engine, "connect", _set_pragmas)
            return self._engine

    @contextmanager
    def _connect(self) -> Iterator[Any]:
        with self._pooled_engine().connect() as connection, connection.begin():
            yield connection

    def dispose(self) -> None:
        super().dispose()
        if self._engine is not None:
            self._engine.dispose()


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
