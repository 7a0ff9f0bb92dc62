"""What the admission policy sees: the ledger's state as a :class:`~nuro_ml.capacity.policy.Snapshot`.

All amounts are in milli-GPUs (``unit`` 1000), so GPU-sharing requests count their share.
Expired leases and waiting requests whose waiter went quiet (or whose deadline passed) are
left out: they hold no GPUs and wait for nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Row

from nuro_ml.capacity import schema
from nuro_ml.capacity.backends.base import PoolCapacity
from nuro_ml.capacity.ledger_rows import milli_quota, quota_from_row, row_milli
from nuro_ml.capacity.ledger_store import LedgerStore
from nuro_ml.capacity.policy import Pending, PoolView, Running, Snapshot
from nuro_ml.capacity.records import MILLI, LeaseState, RequestState


def read_snapshot(store: LedgerStore, observed: Mapping[str, PoolCapacity] | None = None) -> Snapshot:
    """Pools, quotas, active leases and live waiting requests, read in one transaction."""
    now = store.now()
    with store.read() as conn:
        pool_rows = conn.execute(select(schema.pools)).all()
        quota_rows = conn.execute(select(schema.quotas)).all()
        lease_rows = conn.execute(
            select(schema.leases).where(schema.leases.c.state == LeaseState.ACTIVE.value)
        ).all()
        request_rows = conn.execute(
            select(schema.requests).where(schema.requests.c.state == RequestState.WAITING.value)
        ).all()
    return Snapshot(
        now=now.timestamp(),
        pools=pool_views(pool_rows, observed or {}),
        quotas={(r.team, r.pool): milli_quota(quota_from_row(r)) for r in quota_rows},
        running=[running(r) for r in lease_rows if r.expires_at > now],
        pending=[pending(r) for r in request_rows if is_live_request(r, now)],
        unit=MILLI,
    )


def pool_views(rows: Sequence[Row[Any]], observed: Mapping[str, PoolCapacity]) -> dict[str, PoolView]:
    """Each pool capped by what its back end has in total, with the back end's free GPUs."""
    pools: dict[str, PoolView] = {}
    for row in rows:
        seen = observed.get(row.name)
        capacity = row.capacity if seen is None else min(row.capacity, seen.total_gpus)
        pools[row.name] = PoolView(
            row.name, capacity * MILLI, None if seen is None else int(seen.free_gpus * MILLI)
        )
    return pools


def running(row: Row[Any]) -> Running:
    return Running(
        lease_id=row.lease_id,
        key=row.request_key,
        team=row.team,
        pool=row.pool,
        gpus=row_milli(row),
        acquired_at=row.acquired_at.timestamp(),
        expires_at=row.expires_at.timestamp(),
        priority=row.priority,
        reclaim_requested=row.reclaim_requested_at is not None,
    )


def pending(row: Row[Any]) -> Pending:
    return Pending(
        key=row.request_key,
        team=row.team,
        pool=row.pool,
        gpus=row_milli(row),
        enqueued_at=row.enqueued_at.timestamp(),
        nodes=row.nodes,
        priority=row.priority,
        max_runtime=row.ttl_seconds,
    )


def is_live_request(row: Row[Any], now: datetime) -> bool:
    """A waiting request whose waiter refreshed it lately and whose deadline has not passed."""
    return (now - row.last_seen_at).total_seconds() <= row.stale_after_seconds and (
        row.deadline is None or row.deadline > now
    )
