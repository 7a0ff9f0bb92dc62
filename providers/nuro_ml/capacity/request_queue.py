"""The ledger's request queue: waiting requests, their wait reasons, and their admission.

A request waits under its key (``waiting_key``) until it is admitted, withdrawn or
abandoned; the row stays afterwards, with its enqueue and admission times, for wait-time
statistics.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select, update
from sqlalchemy.exc import IntegrityError

from nuro_ml.capacity import schema
from nuro_ml.capacity.ledger_rows import queued_from_row
from nuro_ml.capacity.ledger_store import LOCK_RETRIES, LedgerStore, chunks
from nuro_ml.capacity.reasons import WaitRecord
from nuro_ml.capacity.records import LeaseRequest, QueuedRequest, RequestState
from nuro_ml.exceptions import CapacityError

#: A waiting request not refreshed for this many stale windows is dropped from the queue.
ABANDON_AFTER_STALE_WINDOWS = 10
#: Width of the ``wait_message`` column; longer sentences are cut to fit.
_WAIT_MESSAGE_CHARS = 1000


class RequestQueue:
    """Waiting requests of one ledger database."""

    def __init__(self, store: LedgerStore) -> None:
        self.store = store

    def enqueue(self, request: LeaseRequest) -> QueuedRequest:
        now = self.store.now()
        for _attempt in range(LOCK_RETRIES):
            try:
                with self.store.write() as conn:
                    row = conn.execute(
                        select(schema.requests).where(schema.requests.c.waiting_key == request.key)
                    ).first()
                    if row is not None:
                        conn.execute(
                            update(schema.requests)
                            .where(schema.requests.c.id == row.id)
                            .values(
                                last_seen_at=now,
                                priority=request.priority,
                                deadline=request.deadline,
                                stale_after_seconds=request.stale_after_seconds,
                            )
                        )
                        request_id = row.id
                    else:
                        result = conn.execute(
                            schema.requests.insert().values(
                                **request_values(request, now, RequestState.WAITING),
                                waiting_key=request.key,
                            )
                        )
                        request_id = result.inserted_primary_key[0]  # type: ignore[index]
                    stored = conn.execute(
                        select(schema.requests).where(schema.requests.c.id == request_id)
                    ).one()
                return queued_from_row(stored)
            except IntegrityError:
                # A concurrent enqueue of the same key won the insert: read theirs next round.
                continue
        raise CapacityError(f"ledger {self.store.safe_url}: could not enqueue request {request.key!r}")

    def touch(self, keys: Iterable[str]) -> set[str]:
        keys = sorted(set(keys))
        if not keys:
            return set()
        now = self.store.now()
        found: set[str] = set()
        with self.store.write() as conn:
            for chunk in chunks(keys):
                conn.execute(
                    update(schema.requests)
                    .where(schema.requests.c.waiting_key.in_(chunk))
                    .values(last_seen_at=now)
                )
                found.update(
                    conn.execute(
                        select(schema.requests.c.waiting_key).where(schema.requests.c.waiting_key.in_(chunk))
                    ).scalars()
                )
        return found

    def withdraw(self, key: str, *, state: RequestState = RequestState.WITHDRAWN) -> bool:
        if not state.is_terminal() or state is RequestState.ADMITTED:
            raise CapacityError(f"cannot withdraw request {key!r} into state {state.value!r}")
        with self.store.write() as conn:
            result = conn.execute(
                update(schema.requests)
                .where(schema.requests.c.waiting_key == key)
                .values(state=state.value, waiting_key=None, ended_at=self.store.now())
            )
        return bool(result.rowcount)

    def waiting_request(self, key: str) -> QueuedRequest | None:
        with self.store.read() as conn:
            row = conn.execute(select(schema.requests).where(schema.requests.c.waiting_key == key)).first()
        return None if row is None else queued_from_row(row)

    def record_wait_reasons(self, records: Mapping[str, WaitRecord]) -> set[str]:
        keys = sorted(records)
        if not keys:
            return set()
        changed: set[str] = set()
        updates: dict[str, WaitRecord] = {}
        with self.store.read() as conn:
            for chunk in chunks(keys):
                rows = conn.execute(
                    select(
                        schema.requests.c.waiting_key,
                        schema.requests.c.wait_reason,
                        schema.requests.c.wait_message,
                        schema.requests.c.gpus_ahead,
                    ).where(schema.requests.c.waiting_key.in_(chunk))
                ).all()
                for row in rows:
                    record = records[row.waiting_key]
                    if (row.wait_reason, row.gpus_ahead) != (record.reason.value, record.gpus_ahead):
                        changed.add(row.waiting_key)
                    elif row.wait_message == record.message[:_WAIT_MESSAGE_CHARS]:
                        continue
                    updates[row.waiting_key] = record
        if not updates:
            return changed
        with self.store.write() as conn:
            for key, record in updates.items():
                # By waiting_key: a request admitted or withdrawn since the read is left as it is.
                conn.execute(
                    update(schema.requests)
                    .where(schema.requests.c.waiting_key == key)
                    .values(
                        wait_reason=record.reason.value,
                        wait_message=record.message[:_WAIT_MESSAGE_CHARS],
                        gpus_ahead=record.gpus_ahead,
                    )
                )
        return changed

    def requests(
        self, *, state: RequestState | None = None, pool: str | None = None, key: str | None = None
    ) -> list[QueuedRequest]:
        query = select(schema.requests).order_by(schema.requests.c.enqueued_at, schema.requests.c.id)
        if state is not None:
            query = query.where(schema.requests.c.state == state.value)
        if pool is not None:
            query = query.where(schema.requests.c.pool == pool)
        if key is not None:
            query = query.where(schema.requests.c.request_key == key)
        with self.store.read() as conn:
            return [queued_from_row(r) for r in conn.execute(query).all()]

    def abandon_stale(self) -> int:
        now = self.store.now()
        with self.store.write() as conn:
            rows = conn.execute(
                select(
                    schema.requests.c.id,
                    schema.requests.c.last_seen_at,
                    schema.requests.c.stale_after_seconds,
                ).where(schema.requests.c.state == RequestState.WAITING.value)
            ).all()
            gone = [
                r.id
                for r in rows
                if now - r.last_seen_at
                > timedelta(seconds=r.stale_after_seconds * ABANDON_AFTER_STALE_WINDOWS)
            ]
            for chunk in chunks(gone):
                conn.execute(
                    update(schema.requests)
                    .where(schema.requests.c.id.in_(chunk))
                    .values(state=RequestState.ABANDONED.value, waiting_key=None, ended_at=now)
                )
        return len(gone)


def request_values(request: LeaseRequest, now: datetime, state: RequestState) -> dict[str, Any]:
    """The columns of a new request row for ``request``, enqueued ``now``."""
    return {
        "request_key": request.key,
        "team": request.team,
        "pool": request.pool,
        "gpus": request.gpus,
        "nodes": request.nodes,
        "gpu_milli": request.gpu_milli,
        "share_milli": request.gpu_share,
        "gpu_model": request.gpu_model,
        "priority": request.priority,
        "state": state.value,
        "ttl_seconds": request.ttl_seconds,
        "stale_after_seconds": request.stale_after_seconds,
        "enqueued_at": now,
        "last_seen_at": now,
        "deadline": request.deadline,
    }


def mark_admitted(conn: Connection, request: LeaseRequest, now: datetime, lease_id: str) -> None:
    """Close ``request``'s queue entry as admitted under ``lease_id`` (inside the acquire).

    A request admitted without having queued still gets a row, with zero wait, so wait-time
    statistics count it.
    """
    admitted = {"admitted_at": now, "ended_at": now, "lease_id": lease_id}
    result = conn.execute(
        update(schema.requests)
        .where(schema.requests.c.waiting_key == request.key)
        .values(state=RequestState.ADMITTED.value, waiting_key=None, **admitted)
    )
    if not result.rowcount:
        conn.execute(
            schema.requests.insert().values(
                **request_values(request, now, RequestState.ADMITTED), waiting_key=None, **admitted
            )
        )
