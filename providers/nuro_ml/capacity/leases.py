"""The lease lifecycle: acquire (one transaction), heartbeat, reclaim, release and expiry.

An acquire locks the pool row, reclaims expired leases, reads usage and checks the request
with the same :func:`nuro_ml.capacity.policy.check_fit` the admission policy uses, places
it on the pool's nodes where it has any, then writes the lease, its GPU shares and the
request's admission, all in that one transaction. No interleaving of acquires can thus
exceed a pool's capacity, a node's GPUs or a team's quota. Leases are keyed by task
instance: acquiring again with the same key returns the lease already held.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from nuro_ml.capacity import schema
from nuro_ml.capacity.backends.base import PoolCapacity
from nuro_ml.capacity.lease_placement import place_request
from nuro_ml.capacity.ledger_rows import leases_with_shares, milli_quota, quota_from_row, row_milli
from nuro_ml.capacity.ledger_store import LedgerStore, lock_pool
from nuro_ml.capacity.placement import Placement
from nuro_ml.capacity.policy import Fit, FitResult, PoolUsage, check_fit, gpu_amount
from nuro_ml.capacity.records import MILLI, Lease, LeaseRequest, LeaseShare, LeaseState
from nuro_ml.capacity.request_queue import mark_admitted
from nuro_ml.exceptions import CapacityError, QuotaExceededError

log = logging.getLogger(__name__)

#: Grace a lease gets between a reclaim request and its forced expiry.
DEFAULT_RECLAIM_GRACE_SECONDS = 300.0


class LeaseBook:
    """Leases of one ledger database; ``placement`` names the node placement policy."""

    def __init__(self, store: LedgerStore, placement: str) -> None:
        self.store = store
        self.placement = placement

    # -- acquire ------------------------------------------------------------------------

    def try_acquire(self, request: LeaseRequest, observed: PoolCapacity | None = None) -> Lease | None:
        try:
            lease = self._acquire(request, observed)
        except IntegrityError as err:
            # Only possible when the same key was acquired concurrently in another pool.
            held = self.active_lease(request.key)
            if held is None:
                raise CapacityError(
                    f"ledger {self.store.safe_url}: acquire of {request.key!r} failed: {err}"
                ) from err
            return held
        return lease

    def _acquire(self, request: LeaseRequest, observed: PoolCapacity | None) -> Lease | None:
        with self.store.write() as conn:
            pool_row = self._lock_registered_pool(conn, request)
            # Read the clock under the pool lock: lease timestamps then follow lock order.
            now = self.store.now()
            held = self._held_under_key(conn, request, now)
            if held is not None:
                return held
            live = self._live_leases(conn, request.pool, now)
            fit = self._check_quota(conn, request, pool_row.capacity, live)
            # Placed before the capacity verdict so a request no node can ever hold is refused
            # outright rather than left waiting. Leases granted after the back end's
            # observation cannot show in it yet.
            unseen = [
                row.lease_id
                for row in live
                if observed is not None and row.acquired_at > observed.observed_at
            ]
            admissible, placement = place_request(
                conn,
                request,
                [row.lease_id for row in live],
                policy_name=self.placement,
                ledger=self.store.safe_url,
                observed=observed,
                unseen=unseen,
            )
            if fit.fit is not Fit.FITS or not admissible:
                return None
            lease = self._grant(conn, request, now, fit, placement)
            mark_admitted(conn, request, now, lease.lease_id)
        log.info(
            "Lease %s: %s GPUs of pool %s for team %s (%s borrowed)%s, key %s",
            lease.lease_id,
            gpu_amount(lease.milli, MILLI),
            lease.pool,
            lease.team,
            lease.borrowed,
            f" on {', '.join(lease.node_names)}" if lease.shares else "",
            lease.key,
        )
        return lease

    def _lock_registered_pool(self, conn: Connection, request: LeaseRequest) -> Row[Any]:
        pool_row = lock_pool(conn, request.pool)
        if pool_row is None:
            raise CapacityError(
                f"pool {request.pool!r} is not registered in ledger {self.store.safe_url} "
                f"(request {request.key!r}); register it with upsert_pool or `nuro-ml quota set-pool`"
            )
        return pool_row

    def _held_under_key(self, conn: Connection, request: LeaseRequest, now: datetime) -> Lease | None:
        """The unexpired lease ``request.key`` already holds (a retried task gets it back)."""
        existing = conn.execute(
            select(schema.leases).where(schema.leases.c.active_key == request.key)
        ).first()
        if existing is not None and existing.expires_at > now:
            return leases_with_shares(conn, [existing])[0]
        if existing is not None and existing.pool != request.pool:
            # Its expired lease in another pool still holds the key: end it there.
            expire(conn, now, pool=existing.pool)
        return None

    def _live_leases(self, conn: Connection, pool: str, now: datetime) -> list[Any]:
        """Active, unexpired leases of ``pool``; expired ones are ended on the way."""
        held = conn.execute(
            select(
                schema.leases.c.lease_id,
                schema.leases.c.team,
                schema.leases.c.gpus,
                schema.leases.c.gpu_milli,
                schema.leases.c.expires_at,
                schema.leases.c.acquired_at,
            ).where(
                and_(
                    schema.leases.c.pool == pool,
                    schema.leases.c.state == LeaseState.ACTIVE.value,
                )
            )
        ).all()
        if any(row.expires_at <= now for row in held):
            # Holders that stopped heartbeating give their GPUs back here.
            expire(conn, now, pool=pool)
        return [row for row in held if row.expires_at > now]

    def _check_quota(
        self, conn: Connection, request: LeaseRequest, capacity: int, live: Sequence[Any]
    ) -> FitResult:
        """The request against the pool's capacity and its team's quota (in milli-GPUs).

        Raises :class:`QuotaExceededError` when waiting cannot help.
        """
        usage = PoolUsage.from_leases(
            capacity * MILLI, [(row.team, row_milli(row)) for row in live], unit=MILLI
        )
        quota_rows = conn.execute(select(schema.quotas).where(schema.quotas.c.pool == request.pool)).all()
        fit = check_fit(
            usage,
            {r.team: milli_quota(quota_from_row(r)) for r in quota_rows},
            pool=request.pool,
            team=request.team,
            gpus=request.gpu_milli,
        )
        if fit.fit.is_permanent():
            raise QuotaExceededError(f"{fit.reason} (ledger {self.store.safe_url}, request {request.key!r})")
        return fit

    def _grant(
        self,
        conn: Connection,
        request: LeaseRequest,
        now: datetime,
        fit: FitResult,
        placement: Placement | None,
    ) -> Lease:
        """Write the lease and the GPU shares it holds."""
        # Borrowed GPUs are recorded in GPUs (a borrowed share counts as the GPU it is on).
        borrowed = int(-(-fit.borrowed // MILLI))
        lease_id = f"lease-{uuid.uuid4().hex}"
        expires_at = now + timedelta(seconds=request.ttl_seconds)
        conn.execute(
            schema.leases.insert().values(
                lease_id=lease_id,
                request_key=request.key,
                active_key=request.key,
                team=request.team,
                pool=request.pool,
                gpus=request.gpus,
                nodes=request.nodes,
                gpu_milli=request.gpu_milli,
                share_milli=request.gpu_share,
                gpu_model=request.gpu_model,
                priority=request.priority,
                state=LeaseState.ACTIVE.value,
                borrowed=borrowed,
                ttl_seconds=request.ttl_seconds,
                acquired_at=now,
                heartbeat_at=now,
                expires_at=expires_at,
            )
        )
        shares = (
            () if placement is None else tuple(LeaseShare(x.node, x.gpu, x.milli) for x in placement.shares)
        )
        if shares:
            conn.execute(
                schema.lease_shares.insert(),
                [
                    {"lease_id": lease_id, "node": x.node, "gpu": x.gpu, "milli": x.milli, "position": i}
                    for i, x in enumerate(shares)
                ],
            )
        return Lease(
            lease_id=lease_id,
            key=request.key,
            team=request.team,
            pool=request.pool,
            gpus=request.gpus,
            nodes=request.nodes,
            priority=request.priority,
            state=LeaseState.ACTIVE,
            acquired_at=now,
            heartbeat_at=now,
            expires_at=expires_at,
            ttl_seconds=request.ttl_seconds,
            borrowed=borrowed,
            gpu_milli=request.gpu_milli,
            shares=shares,
            gpu_model=request.gpu_model,
        )

    # -- after the acquire --------------------------------------------------------------

    def release(self, lease_id: str) -> Lease | None:
        with self.store.write() as conn:
            row = conn.execute(select(schema.leases).where(schema.leases.c.lease_id == lease_id)).first()
            if row is None:
                return None
            if row.state == LeaseState.ACTIVE.value:
                lock_pool(conn, row.pool)
                now = self.store.now()
                released = conn.execute(
                    update(schema.leases)
                    .where(
                        and_(
                            schema.leases.c.lease_id == lease_id,
                            schema.leases.c.state == LeaseState.ACTIVE.value,
                            schema.leases.c.expires_at > now,
                        )
                    )
                    .values(state=LeaseState.RELEASED.value, active_key=None, released_at=now)
                    .returning(*schema.leases.c)
                ).first()
                if released is not None:
                    return leases_with_shares(conn, [released])[0]
                # Already ended meanwhile, or its holder stopped heartbeating before releasing:
                # then it ended at its expiry.
                expire(conn, now, pool=row.pool)
                row = conn.execute(select(schema.leases).where(schema.leases.c.lease_id == lease_id)).one()
            return leases_with_shares(conn, [row])[0]

    def heartbeat(self, lease_id: str, *, ttl_seconds: float | None = None) -> Lease:
        now = self.store.now()
        with self.store.write() as conn:
            row = conn.execute(select(schema.leases).where(schema.leases.c.lease_id == lease_id)).first()
            if row is None:
                raise CapacityError(f"lease {lease_id!r} is not in ledger {self.store.safe_url}")
            if row.state == LeaseState.ACTIVE.value and row.expires_at <= now:
                expire(conn, now, pool=row.pool)
            elif row.state == LeaseState.ACTIVE.value:
                ttl = float(ttl_seconds) if ttl_seconds is not None else float(row.ttl_seconds)
                expires = now + timedelta(seconds=ttl)
                if row.reclaim_requested_at is not None:
                    expires = min(expires, row.expires_at)
                conn.execute(
                    update(schema.leases)
                    .where(schema.leases.c.lease_id == lease_id)
                    .values(heartbeat_at=now, expires_at=expires)
                )
            row = conn.execute(select(schema.leases).where(schema.leases.c.lease_id == lease_id)).one()
            return leases_with_shares(conn, [row])[0]

    def request_reclaim(
        self, lease_ids: Iterable[str], *, grace_seconds: float = DEFAULT_RECLAIM_GRACE_SECONDS
    ) -> list[str]:
        now = self.store.now()
        deadline = now + timedelta(seconds=grace_seconds)
        marked: list[str] = []
        with self.store.write() as conn:
            for lease_id in sorted(set(lease_ids)):
                row = conn.execute(select(schema.leases).where(schema.leases.c.lease_id == lease_id)).first()
                if (
                    row is None
                    or row.state != LeaseState.ACTIVE.value
                    or row.reclaim_requested_at is not None
                ):
                    continue
                conn.execute(
                    update(schema.leases)
                    .where(schema.leases.c.lease_id == lease_id)
                    .values(reclaim_requested_at=now, expires_at=min(row.expires_at, deadline))
                )
                marked.append(lease_id)
        for lease_id in marked:
            log.warning("Lease %s lends borrowed GPUs back: it expires in %.0f s", lease_id, grace_seconds)
        return marked

    def expire_leases(self) -> int:
        with self.store.write() as conn:
            count = expire(conn, self.store.now())
        if count:
            log.warning(
                "Ledger %s: %s lease(s) expired without a heartbeat and were reclaimed",
                self.store.safe_url,
                count,
            )
        return count

    # -- reads --------------------------------------------------------------------------

    def lease(self, lease_id: str) -> Lease | None:
        with self.store.read() as conn:
            row = conn.execute(select(schema.leases).where(schema.leases.c.lease_id == lease_id)).first()
            return None if row is None else leases_with_shares(conn, [row])[0]

    def active_lease(self, key: str) -> Lease | None:
        with self.store.read() as conn:
            row = conn.execute(select(schema.leases).where(schema.leases.c.active_key == key)).first()
            if row is None or row.expires_at <= self.store.now():
                return None
            return leases_with_shares(conn, [row])[0]

    def leases(
        self,
        *,
        state: LeaseState | None = None,
        pool: str | None = None,
        team: str | None = None,
        since: datetime | None = None,
    ) -> list[Lease]:
        query = select(schema.leases).order_by(schema.leases.c.acquired_at, schema.leases.c.lease_id)
        if state is not None:
            query = query.where(schema.leases.c.state == state.value)
        if pool is not None:
            query = query.where(schema.leases.c.pool == pool)
        if team is not None:
            query = query.where(schema.leases.c.team == team)
        if since is not None:
            query = query.where(schema.leases.c.acquired_at >= since)
        with self.store.read() as conn:
            return leases_with_shares(conn, conn.execute(query).all())


def expire(conn: Connection, now: datetime, *, pool: str | None = None) -> int:
    """End the active leases (of ``pool``) whose expiry has passed; returns how many."""
    condition = and_(schema.leases.c.state == LeaseState.ACTIVE.value, schema.leases.c.expires_at <= now)
    if pool is not None:
        condition = and_(condition, schema.leases.c.pool == pool)
    result = conn.execute(
        update(schema.leases).where(condition).values(state=LeaseState.EXPIRED.value, active_key=None)
    )
    return int(result.rowcount or 0)
