"""The ledger's database: engine, clock, transactions, migrations and row-level helpers.

Every part of the ledger (pools, queue, leases, snapshot) reads and writes through one
:class:`LedgerStore`, so they share one engine, one clock and one idea of a transaction:
write transactions hold the SQLite write lock from their first statement, and the pool row
lock (:meth:`LedgerStore.lock_pool`) is what serialises acquires on PostgreSQL.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Row, make_url
from sqlalchemy.exc import IntegrityError, OperationalError

from nuro_ml import settings
from nuro_ml.capacity import schema
from nuro_ml.capacity.engine import READ_ONLY, get_engine
from nuro_ml.exceptions import CapacityError

log = logging.getLogger(__name__)

#: Ids per ``IN (...)`` clause: keeps statements under every back end's parameter limit.
_IN_CHUNK = 500
#: Attempts at statements that can lose a race with another process (migration, enqueue).
LOCK_RETRIES = 5

#: Ledger URLs this process has migrated already (migration runs once per URL and process).
MIGRATED: set[str] = set()
_T = TypeVar("_T")


def utcnow() -> datetime:
    return datetime.now(UTC)


def chunks(items: Sequence[_T], size: int = _IN_CHUNK) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class LedgerStore:
    """One ledger database: a lazily created, migrated engine and its transactions.

    :param url: SQLAlchemy URL of the ledger database; defaults to
        :func:`nuro_ml.settings.ledger_url`.
    :param clock: Source of "now" (timezone-aware UTC).
    """

    def __init__(self, url: str | None = None, *, clock: Callable[[], datetime] | None = None) -> None:
        self.url = url or settings.ledger_url()
        self.clock = clock or utcnow
        self._engine: Engine | None = None

    @property
    def safe_url(self) -> str:
        """The URL with any password masked, for logs and error messages."""
        return make_url(self.url).render_as_string(hide_password=True)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = get_engine(self.url)
            if self.url not in MIGRATED:
                self.migrate()
        return self._engine

    def now(self) -> datetime:
        return self.clock()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction (SQLite: holds the write lock from its first statement)."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except OperationalError as err:
            raise CapacityError(f"ledger {self.safe_url}: {err}") from err

    @contextmanager
    def read(self) -> Iterator[Connection]:
        engine = self.engine
        options: dict[str, Any] = {READ_ONLY: True}
        if engine.dialect.name == "postgresql":
            options["isolation_level"] = "REPEATABLE READ"
        with engine.connect() as conn:
            conn = conn.execution_options(**options)
            with conn.begin():
                yield conn

    def migrate(self) -> list[int]:
        """Create or upgrade the ledger tables; safe to call from many processes at once."""
        engine = self._engine or get_engine(self.url)
        self._engine = engine
        applied: list[int] = []
        for attempt in range(LOCK_RETRIES):
            try:
                with engine.begin() as conn:
                    applied = schema.migrate(conn)
                break
            except (OperationalError, IntegrityError) as err:
                # Another process created the tables between our check and our CREATE.
                if attempt == LOCK_RETRIES - 1:
                    raise CapacityError(f"ledger {self.safe_url}: migration failed: {err}") from err
                time.sleep(0.05 * (attempt + 1))
        MIGRATED.add(self.url)
        if applied:
            log.info("Ledger %s migrated to schema version %s", self.safe_url, applied[-1])
        return applied

    def schema_version(self) -> int:
        with self.read() as conn:
            return schema.current_version(conn)


def upsert(conn: Connection, table: Any, values: dict[str, Any], keys: Sequence[str]) -> None:
    """Insert ``values`` into ``table`` or update the row with the same ``keys``."""
    if conn.dialect.name == "postgresql":
        stmt: Any = pg_insert(table).values(**values)
    else:
        stmt = sqlite_insert(table).values(**values)
    update_cols = {k: stmt.excluded[k] for k in values if k not in keys}
    conn.execute(stmt.on_conflict_do_update(index_elements=list(keys), set_=update_cols))


def lock_pool(conn: Connection, pool: str) -> Row[Any] | None:
    """The pool's row, locked for this transaction on PostgreSQL (SQLite: already locked)."""
    query = select(schema.pools).where(schema.pools.c.name == pool)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return conn.execute(query).first()
