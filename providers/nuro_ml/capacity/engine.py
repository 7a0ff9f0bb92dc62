"""SQLAlchemy engines for the ledger: write transactions that serialise where they must.

SQLite: every write transaction starts with ``BEGIN IMMEDIATE`` (the database write lock is
taken up front, so two acquires can never both read the old usage), WAL journal so readers
do not block the writer, and a generous busy timeout. PostgreSQL: ordinary READ COMMITTED
transactions; the ledger takes ``SELECT ... FOR UPDATE`` on the pool row before reading usage.
Engines are cached per URL and process, and dropped in a forked child (Airflow forks task
runners) so no connection is ever shared across processes.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

from nuro_ml.exceptions import CapacityError

#: Execution option marking a read-only transaction (SQLite then uses a deferred BEGIN).
READ_ONLY = "nuro_ml_read_only"

SUPPORTED_DIALECTS = ("sqlite", "postgresql")

_ENGINES: dict[str, Engine] = {}
_LOCK = threading.Lock()


def _sqlite_engine(url: str) -> Engine:
    parsed = make_url(url)
    database = parsed.database or ""
    in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
    kwargs: dict[str, Any] = {"connect_args": {"timeout": 60.0, "check_same_thread": False}}
    if in_memory:
        kwargs["poolclass"] = StaticPool
    else:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to the "begin" hook below instead of pysqlite's implicit BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            if not in_memory:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.get_execution_options().get(READ_ONLY):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _postgres_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return create_engine(parsed, pool_pre_ping=True, pool_size=5, max_overflow=20)


def get_engine(url: str) -> Engine:
    """The process-wide engine for ``url`` (created on first use)."""
    with _LOCK:
        engine = _ENGINES.get(url)
        if engine is not None:
            return engine
        backend = make_url(url).get_backend_name()
        if backend == "sqlite":
            engine = _sqlite_engine(url)
        elif backend == "postgresql":
            engine = _postgres_engine(url)
        else:
            raise CapacityError(
                f"ledger URL {make_url(url).render_as_string(hide_password=True)!r} uses {backend!r}; "
                f"the ledger supports {', '.join(SUPPORTED_DIALECTS)}"
            )
        _ENGINES[url] = engine
        return engine


def dispose_all() -> None:
    """Close every cached engine (tests, CLI exit)."""
    with _LOCK:
        for engine in _ENGINES.values():
            engine.dispose()
        _ENGINES.clear()


def _after_fork_in_child() -> None:
    # The parent's pooled connections must not be used (or closed) by the child, and a lock
    # held by another parent thread at fork time would never be released here.
    global _LOCK
    _LOCK = threading.Lock()
    for engine in list(_ENGINES.values()):
        engine.dispose(close=False)
    _ENGINES.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
