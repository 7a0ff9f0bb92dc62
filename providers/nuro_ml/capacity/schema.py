"""Tables of the GPU quota ledger and their versioned migrations.

The ledger keeps its own small migration table (``capacity_schema_version``) instead of an
Alembic environment: it lives in its own database (SQLite file or a PostgreSQL database),
has a handful of tables, and must upgrade itself when the first sensor of a new release
opens it. Each migration runs in one transaction under a database-wide lock, so several
processes opening a fresh ledger at once apply it exactly once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    TypeDecorator,
    UniqueConstraint,
    inspect,
    text,
)
from sqlalchemy.engine import Connection, Dialect


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored as naive UTC on every back end and returned timezone-aware."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given to the ledger; use timezone-aware UTC")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


metadata = MetaData()

schema_version = Table(
    "capacity_schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("description", String(200), nullable=False),
    Column("applied_at", UTCDateTime, nullable=False),
)

pools = Table(
    "capacity_pools",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("capacity", Integer, nullable=False),
    Column("gpu_type", String(64), nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
)

quotas = Table(
    "capacity_quotas",
    metadata,
    Column("team", String(128), primary_key=True),
    Column("pool", String(128), ForeignKey("capacity_pools.name"), primary_key=True),
    # Whole GPUs, rounded down: what releases before version 4 read.
    Column("nominal", Integer, nullable=False),
    Column("borrowing_limit", Integer, nullable=True),
    Column("lending_limit", Integer, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
    # Since version 4: the same amounts in milli-GPUs (quotas of 2.5 GPUs), and the
    # ``updated_at`` they were written with. A release before version 4 that changes the row
    # writes the whole-GPU columns and ``updated_at`` alone: the milli values then no longer
    # match and are not read (nuro_ml.capacity.ledger_rows.quota_from_row).
    Column("nominal_milli", Integer, nullable=True),
    Column("borrowing_limit_milli", Integer, nullable=True),
    Column("lending_limit_milli", Integer, nullable=True),
    Column("milli_updated_at", UTCDateTime, nullable=True),
)

leases = Table(
    "capacity_leases",
    metadata,
    Column("lease_id", String(64), primary_key=True),
    Column("request_key", String(512), nullable=False),
    # Equals request_key while the lease is active and NULL afterwards: the unique constraint
    # makes "one active lease per task instance" hold even across pools and processes.
    Column("active_key", String(512), nullable=True),
    Column("team", String(128), nullable=False),
    Column("pool", String(128), ForeignKey("capacity_pools.name"), nullable=False),
    Column("gpus", Integer, nullable=False),
    Column("nodes", Integer, nullable=False),
    Column("priority", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("borrowed", Integer, nullable=False),
    # Since version 2: milli-GPUs held in all (GPU-sharing leases hold less than ``gpus`` x
    # 1000), the share per GPU, and the GPU model asked for. NULL on rows of version 1.
    Column("gpu_milli", Integer, nullable=True),
    Column("share_milli", Integer, nullable=True),
    Column("gpu_model", String(64), nullable=True),
    Column("ttl_seconds", Float, nullable=False),
    Column("acquired_at", UTCDateTime, nullable=False),
    Column("heartbeat_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("released_at", UTCDateTime, nullable=True),
    Column("reclaim_requested_at", UTCDateTime, nullable=True),
    UniqueConstraint("active_key", name="uq_capacity_leases_active_key"),
    Index("ix_capacity_leases_pool_state", "pool", "state"),
    Index("ix_capacity_leases_request_key", "request_key"),
)

requests = Table(
    "capacity_requests",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_key", String(512), nullable=False),
    # Equals request_key while the request waits: at most one waiting request per task instance.
    Column("waiting_key", String(512), nullable=True),
    Column("team", String(128), nullable=False),
    Column("pool", String(128), nullable=False),
    Column("gpus", Integer, nullable=False),
    Column("nodes", Integer, nullable=False),
    Column("priority", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("ttl_seconds", Float, nullable=False),
    Column("stale_after_seconds", Float, nullable=False),
    Column("gpu_milli", Integer, nullable=True),
    Column("share_milli", Integer, nullable=True),
    Column("gpu_model", String(64), nullable=True),
    Column("enqueued_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),
    Column("deadline", UTCDateTime, nullable=True),
    Column("admitted_at", UTCDateTime, nullable=True),
    Column("ended_at", UTCDateTime, nullable=True),
    Column("lease_id", String(64), nullable=True),
    # Since version 3: why the request waits, as of the last admission round that left it
    # waiting (a code of nuro_ml.capacity.reasons.WaitReason), its sentence, and the GPUs
    # queued ahead of it. NULL until a round classified it.
    Column("wait_reason", String(32), nullable=True),
    Column("wait_message", String(1000), nullable=True),
    Column("gpus_ahead", Integer, nullable=True),
    UniqueConstraint("waiting_key", name="uq_capacity_requests_waiting_key"),
    Index("ix_capacity_requests_pool_state", "pool", "state"),
    Index("ix_capacity_requests_request_key", "request_key"),
)


nodes = Table(
    "capacity_nodes",
    metadata,
    Column("pool", String(128), ForeignKey("capacity_pools.name"), primary_key=True),
    Column("name", String(253), primary_key=True),
    Column("gpus", Integer, nullable=False),
    Column("gpu_model", String(64), nullable=True),
    Column("cpu_milli", Integer, nullable=False),
    Column("memory_mib", Integer, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

#: The GPU shares a lease holds: one row per GPU it uses (milli-GPUs of GPU ``gpu`` of node).
lease_shares = Table(
    "capacity_lease_shares",
    metadata,
    Column("lease_id", String(64), ForeignKey("capacity_leases.lease_id"), primary_key=True),
    Column("node", String(253), primary_key=True),
    Column("gpu", Integer, primary_key=True, autoincrement=False),
    Column("milli", Integer, nullable=False),
    # Placement order (worker by worker), so the first node is the first worker's.
    Column("position", Integer, nullable=False),
    Index("ix_capacity_lease_shares_node", "node"),
)

_V2_COLUMNS = {
    "capacity_leases": ("gpu_milli INTEGER", "share_milli INTEGER", "gpu_model VARCHAR(64)"),
    "capacity_requests": ("gpu_milli INTEGER", "share_milli INTEGER", "gpu_model VARCHAR(64)"),
}


_V3_COLUMNS = {
    "capacity_requests": ("wait_reason VARCHAR(32)", "wait_message VARCHAR(1000)", "gpus_ahead INTEGER"),
}


_V4_COLUMNS = {
    "capacity_quotas": (
        "nominal_milli INTEGER",
        "borrowing_limit_milli INTEGER",
        "lending_limit_milli INTEGER",
        # TIMESTAMP: PostgreSQL's name; SQLite takes any type name and SQLAlchemy reads the
        # column by the table's definition above.
        "milli_updated_at TIMESTAMP",
    ),
}


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[Connection], None]


def _initial(conn: Connection) -> None:
    metadata.create_all(conn, tables=[pools, quotas, leases, requests], checkfirst=True)


def _add_columns(conn: Connection, columns_by_table: Mapping[str, tuple[str, ...]]) -> None:
    """Add the columns a table lacks (a fresh ledger already has them from ``_initial``)."""
    inspector = inspect(conn)
    for table, columns in columns_by_table.items():
        present = {c["name"] for c in inspector.get_columns(table)}
        for column in columns:
            if column.split()[0] not in present:
                conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column}"))


def _nodes_and_milli(conn: Connection) -> None:
    """Version 2: nodes, lease shares, and milli-GPU amounts (existing rows: whole GPUs)."""
    _add_columns(conn, _V2_COLUMNS)
    for table in _V2_COLUMNS:
        conn.execute(
            text(f"UPDATE {table} SET gpu_milli = gpus * 1000, share_milli = 1000 WHERE gpu_milli IS NULL")
        )
    metadata.create_all(conn, tables=[nodes, lease_shares], checkfirst=True)


def _wait_reasons(conn: Connection) -> None:
    """Version 3: why each waiting request waits (filled by the next admission round)."""
    _add_columns(conn, _V3_COLUMNS)


def _milli_quotas(conn: Connection) -> None:
    """Version 4: quotas in milli-GPUs (existing quotas: their whole GPUs)."""
    _add_columns(conn, _V4_COLUMNS)
    conn.execute(
        text(
            "UPDATE capacity_quotas SET nominal_milli = nominal * 1000, "
            "borrowing_limit_milli = borrowing_limit * 1000, lending_limit_milli = lending_limit * 1000, "
            "milli_updated_at = updated_at WHERE nominal_milli IS NULL"
        )
    )


#: Append-only: never edit an applied migration, add the next version instead.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "pools, quotas, leases, requests", _initial),
    Migration(2, "nodes, lease shares, milli-GPU amounts", _nodes_and_milli),
    Migration(3, "wait reason, message and GPUs ahead of waiting requests", _wait_reasons),
    Migration(4, "quotas in milli-GPUs", _milli_quotas),
)

LATEST_VERSION = MIGRATIONS[-1].version

#: Key of the PostgreSQL advisory lock serialising migrations (any constant bigint).
_PG_MIGRATION_LOCK = 0x4E55524F4350


def current_version(conn: Connection) -> int:
    if not conn.dialect.has_table(conn, schema_version.name):
        return 0
    value = conn.execute(text("SELECT MAX(version) FROM capacity_schema_version")).scalar()
    return int(value or 0)


def migrate(conn: Connection) -> list[int]:
    """Apply pending migrations inside the caller's transaction; returns the versions applied."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
    metadata.create_all(conn, tables=[schema_version], checkfirst=True)
    applied: list[int] = []
    version = current_version(conn)
    for migration in MIGRATIONS:
        if migration.version <= version:
            continue
        migration.apply(conn)
        row: dict[str, Any] = {
            "version": migration.version,
            "description": migration.description,
            "applied_at": datetime.now(UTC),
        }
        conn.execute(schema_version.insert().values(**row))
        applied.append(migration.version)
    return applied
