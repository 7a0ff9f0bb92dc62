"""Ledger rows as records: quotas, leases (with their GPU shares) and queued requests.

Rows written before GPU amounts were counted in milli-GPUs have no ``gpu_milli``; they read
as their whole GPUs (:func:`row_milli`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.engine import Row

from nuro_ml.capacity import schema
from nuro_ml.capacity.ledger_store import chunks
from nuro_ml.capacity.records import (
    MILLI,
    Lease,
    LeaseShare,
    LeaseState,
    QueuedRequest,
    Quota,
    RequestState,
    gpus_from_milli,
    milli_of,
)


def row_milli(row: Any) -> int:
    """A lease's or request's GPUs in milli-GPUs."""
    milli = getattr(row, "gpu_milli", None)
    return int(row.gpus) * MILLI if milli is None else int(milli)


def _gpus(milli: int | None) -> int | float | None:
    return None if milli is None else gpus_from_milli(milli)


def quota_from_row(row: Row[Any]) -> Quota:
    """A quota row as GPUs: fractional from the milli-GPU columns, whole where they do not count.

    The milli-GPU columns count while they were written with the row's ``updated_at``: rows
    from before version 4, and rows a release before it changed since, read as whole GPUs.
    """
    names = ("nominal", "borrowing_limit", "lending_limit")
    written_at = getattr(row, "milli_updated_at", None)
    if written_at is not None and written_at == row.updated_at and row.nominal_milli is not None:
        milli = [getattr(row, f"{name}_milli") for name in names]
    else:
        milli = [None if getattr(row, name) is None else getattr(row, name) * MILLI for name in names]
    return Quota(
        team=row.team,
        pool=row.pool,
        nominal=gpus_from_milli(milli[0]),
        borrowing_limit=_gpus(milli[1]),
        lending_limit=_gpus(milli[2]),
    )


def quota_columns(quota: Quota, updated_at: datetime) -> dict[str, Any]:
    """The quota's row values: milli-GPUs, and whole GPUs rounded down for older releases."""
    columns: dict[str, Any] = {"updated_at": updated_at, "milli_updated_at": updated_at}
    for name in ("nominal", "borrowing_limit", "lending_limit"):
        value = getattr(quota, name)
        milli = None if value is None else milli_of(value)
        columns[f"{name}_milli"] = milli
        columns[name] = None if milli is None else milli // MILLI
    return columns


def milli_quota(quota: Quota) -> Quota:
    """A quota in milli-GPUs, as the policy counts inside the ledger."""
    return Quota(
        team=quota.team,
        pool=quota.pool,
        nominal=milli_of(quota.nominal),
        borrowing_limit=None if quota.borrowing_limit is None else milli_of(quota.borrowing_limit),
        lending_limit=None if quota.lending_limit is None else milli_of(quota.lending_limit),
    )


def lease_from_row(row: Row[Any], shares: tuple[LeaseShare, ...] = ()) -> Lease:
    return Lease(
        lease_id=row.lease_id,
        key=row.request_key,
        team=row.team,
        pool=row.pool,
        gpus=row.gpus,
        nodes=row.nodes,
        priority=row.priority,
        state=LeaseState(row.state),
        acquired_at=row.acquired_at,
        heartbeat_at=row.heartbeat_at,
        expires_at=row.expires_at,
        ttl_seconds=row.ttl_seconds,
        borrowed=row.borrowed,
        released_at=row.released_at,
        reclaim_requested_at=row.reclaim_requested_at,
        gpu_milli=row_milli(row),
        shares=shares,
        gpu_model=row.gpu_model,
    )


def leases_with_shares(conn: Connection, rows: Sequence[Row[Any]]) -> list[Lease]:
    """Leases of ``rows`` with the GPU shares each holds."""
    shares: dict[str, list[LeaseShare]] = {}
    ids = [r.lease_id for r in rows]
    for chunk in chunks(ids):
        found = conn.execute(
            select(schema.lease_shares)
            .where(schema.lease_shares.c.lease_id.in_(chunk))
            .order_by(schema.lease_shares.c.lease_id, schema.lease_shares.c.position)
        ).all()
        for share in found:
            shares.setdefault(share.lease_id, []).append(LeaseShare(share.node, share.gpu, share.milli))
    return [lease_from_row(r, tuple(shares.get(r.lease_id, ()))) for r in rows]


def queued_from_row(row: Row[Any]) -> QueuedRequest:
    return QueuedRequest(
        id=row.id,
        key=row.request_key,
        team=row.team,
        pool=row.pool,
        gpus=row.gpus,
        nodes=row.nodes,
        priority=row.priority,
        state=RequestState(row.state),
        enqueued_at=row.enqueued_at,
        last_seen_at=row.last_seen_at,
        stale_after_seconds=row.stale_after_seconds,
        ttl_seconds=row.ttl_seconds,
        deadline=row.deadline,
        admitted_at=row.admitted_at,
        ended_at=row.ended_at,
        lease_id=row.lease_id,
        gpu_milli=row_milli(row),
        wait_reason=row.wait_reason,
        wait_message=row.wait_message,
        gpus_ahead=row.gpus_ahead,
    )
