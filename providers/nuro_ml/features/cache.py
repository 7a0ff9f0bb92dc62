"""Durable record of feature computations already done, so reruns and backfills skip them.

A computation is one feature view materialized from one input partition over one effective
interval into one online store. Its key hashes the view's definition, the partition's
fingerprint (files, sizes and mtimes, or content hashes), the interval and the target store, so
any change to the definition or the data makes a new key: a miss, and the work is redone. An
entry is recorded only after the rows are in the online store; a failed write leaves no entry.

Entries live in a SQL table: SQLite under ``settings.feast_dir()`` by default, PostgreSQL when
several workers share the cache.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

#: Bump when the way rows are computed or written changes, so old entries stop matching.
CACHE_FORMAT_VERSION = 1

_metadata = sa.MetaData()
computations = sa.Table(
    "nuro_feature_computations",
    _metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("feature_view", sa.String(255), nullable=False, index=True),
    sa.Column("partition", sa.String(255), nullable=False),
    sa.Column("interval_start", sa.String(40), nullable=False),
    sa.Column("interval_end", sa.String(40), nullable=False),
    sa.Column("target", sa.String(512), nullable=False),
    sa.Column("rows", sa.BigInteger, nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True)
class Computation:
    """One unit of feature work and its cache key."""

    feature_view: str
    view_hash: str
    partition: str
    fingerprint: str
    interval_start: datetime
    interval_end: datetime
    target: str

    @cached_property
    def key(self) -> str:
        payload = json.dumps(
            [
                CACHE_FORMAT_VERSION,
                self.feature_view,
                self.view_hash,
                self.partition,
                self.fingerprint,
                self.interval_start.astimezone(UTC).isoformat(),
                self.interval_end.astimezone(UTC).isoformat(),
                self.target,
            ],
            separators=(",", ":"),
        )
        return hashlib.sha256(payload.encode()).hexdigest()


class ComputationCache:
    """The computation table behind a SQLAlchemy URL (created on first use)."""

    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)

    @cached_property
    def engine(self) -> sa.Engine:
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if self.url.startswith("sqlite"):
            # Several task processes may record at once; wait for the write lock instead of failing.
            kwargs["connect_args"] = {"timeout": 30}
        engine = sa.create_engine(self.url, **kwargs)
        if self.url.startswith("sqlite"):

            @sa.event.listens_for(engine, "connect")
            def _wal(dbapi_conn: Any, _record: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.close()

        _metadata.create_all(engine, checkfirst=True)
        return engine

    def hits(self, units: Sequence[Computation]) -> set[str]:
        """Keys of ``units`` that are already recorded."""
        keys = [u.key for u in units]
        found: set[str] = set()
        with self.engine.connect() as conn:
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                rows = conn.execute(sa.select(computations.c.key).where(computations.c.key.in_(chunk)))
                found.update(r[0] for r in rows)
        return found

    def record(self, unit: Computation, rows: int) -> None:
        """Remember that ``unit`` is done (idempotent: a concurrent or repeated record is fine)."""
        values = {
            "key": unit.key,
            "feature_view": unit.feature_view,
            "partition": unit.partition,
            "interval_start": unit.interval_start.astimezone(UTC).isoformat(),
            "interval_end": unit.interval_end.astimezone(UTC).isoformat(),
            "target": unit.target,
            "rows": rows,
            "recorded_at": datetime.now(UTC),
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(computations.insert().values(**values))
        except IntegrityError:
            # Another run recorded the same computation first; the record is identical in meaning.
            pass

    def forget(self, feature_views: Iterable[str]) -> int:
        """Drop the entries of the given views (their next materialization recomputes everything)."""
        with self.engine.begin() as conn:
            result = conn.execute(
                computations.delete().where(computations.c.feature_view.in_(list(feature_views)))
            )
        return int(result.rowcount or 0)

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(computations)).scalar_one())

    def dispose(self) -> None:
        if "engine" in self.__dict__:
            self.engine.dispose()
