"""Everything the capacity page shows, read from the quota ledger in one place.

This is the only module of the UI that talks to :class:`nuro_ml.capacity.ledger.QuotaLedger`;
it turns pools, quotas, leases and queued requests into the view models the JSON API and
the page render (usage per pool and team, the waiting queue with wait times, GPU-hours and
their cost, and a usage timeline), and applies quota changes.

GPU-hour prices come from ``NURO_ML_GPU_HOUR_PRICES``, a JSON object mapping a pool name
or GPU type to USD per GPU-hour (pool names win); GPU types it does not name use the AWS
on-demand list prices below. A pool with no known price shows GPU-hours without a cost.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from functools import cache

from pydantic import BaseModel

from nuro_ml import settings
from nuro_ml.capacity.ledger import QuotaLedger
from nuro_ml.capacity.records import MILLI, Lease, LeaseState, Pool, QueuedRequest, Quota, RequestState

#: USD per GPU-hour: AWS on-demand us-east-1 list price of the instance divided by its GPUs
#: (p5.48xlarge H100, p4d.24xlarge A100, p3.2xlarge V100, g6.xlarge L4, g5.xlarge A10G,
#: g4dn.xlarge T4).
DEFAULT_GPU_HOUR_PRICES: dict[str, float] = {
    "H100": 12.29,
    "A100": 4.10,
    "V100": 3.06,
    "L4": 0.80,
    "A10G": 1.01,
    "T4": 0.53,
}
PRICES_ENV = "NURO_ML_GPU_HOUR_PRICES"
#: Leases acquired this long before a window started may still have run into it.
_LEASE_LOOKBACK = timedelta(days=2)


class PoolView(BaseModel):
    name: str
    gpu_type: str | None
    capacity: int
    #: GPUs, fractional where GPU shares are held (0.25).
    used: int | float
    free: int | float
    utilization: float
    waiting_requests: int
    waiting_gpus: int | float
    price_per_gpu_hour: float | None


class QuotaView(BaseModel):
    team: str
    pool: str
    nominal: int
    borrowing_limit: int | None
    lending_limit: int | None
    limit: int
    used: int | float
    borrowed: int


class LeaseView(BaseModel):
    lease_id: str
    key: str
    dag_id: str | None
    run_id: str | None
    task_id: str | None
    team: str
    pool: str
    gpus: int | float
    #: Nodes the lease holds GPUs on (empty where the pool is counted as a whole).
    nodes: list[str] = []
    borrowed: int
    priority: int
    acquired_at: datetime
    expires_at: datetime
    held_seconds: float
    gpu_hours: float
    cost: float | None


class QueueEntry(BaseModel):
    position: int
    key: str
    dag_id: str | None
    run_id: str | None
    task_id: str | None
    team: str
    pool: str
    gpus: int
    priority: int
    enqueued_at: datetime
    wait_seconds: float
    stale: bool
    #: Why it waits as of the last admission round (``quota_limit``, ``pool_short``,
    #: ``behind_requests``, ...), its sentence and the GPUs queued ahead; ``None`` until a
    #: round classified it.
    reason: str | None = None
    reason_message: str | None = None
    gpus_ahead: int | None = None


class TeamCost(BaseModel):
    team: str
    pool: str
    gpu_hours: float
    cost: float | None


class WaitStats(BaseModel):
    admitted: int
    p50_seconds: float | None
    p95_seconds: float | None
    max_waiting_seconds: float | None


class UsageSeries(BaseModel):
    team: str
    gpus: list[float]


class Usage(BaseModel):
    start: datetime
    bucket_seconds: int
    buckets: list[datetime]
    capacity: int
    series: list[UsageSeries]


class CapacityOverview(BaseModel):
    generated_at: datetime
    window_hours: float
    currency: str
    pools: list[PoolView]
    quotas: list[QuotaView]
    leases: list[LeaseView]
    queue: list[QueueEntry]
    costs: list[TeamCost]
    total_gpu_hours: float
    total_cost: float | None
    waits: WaitStats
    usage: Usage


@cache
def _ledger(url: str) -> QuotaLedger:
    return QuotaLedger(url)


def ledger() -> QuotaLedger:
    """The ledger at ``settings.ledger_url()`` (one engine per URL, shared by requests)."""
    return _ledger(settings.ledger_url())


def gpu_hour_prices() -> dict[str, float]:
    """Configured prices (pool name or GPU type -> USD per GPU-hour) over the defaults."""
    prices = dict(DEFAULT_GPU_HOUR_PRICES)
    raw = os.environ.get(PRICES_ENV)
    if raw:
        configured = json.loads(raw)
        if not isinstance(configured, dict) or not all(
            isinstance(v, int | float) and v >= 0 for v in configured.values()
        ):
            raise ValueError(f"{PRICES_ENV} must be a JSON object of non-negative numbers, got {raw!r}")
        prices.update({str(k): float(v) for k, v in configured.items()})
    return prices


def price_of(pool: Pool | None, prices: dict[str, float]) -> float | None:
    if pool is None:
        return None
    if pool.name in prices:
        return prices[pool.name]
    return prices.get(pool.gpu_type or "")


def split_key(key: str) -> tuple[str | None, str | None, str | None]:
    """``dag_id/run_id/task_id/map_index`` (the sensor's idempotency key) -> its parts."""
    parts = key.split("/")
    if len(parts) < 4:
        return None, None, None
    return parts[0], "/".join(parts[1:-2]), parts[-2]


def _percentile(values: Sequence[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


def _overlap_seconds(lease: Lease, start: datetime, end: datetime, now: datetime) -> float:
    lease_end = lease.acquired_at + timedelta(seconds=lease.held_seconds(now))
    return max(0.0, (min(lease_end, end) - max(lease.acquired_at, start)).total_seconds())


def overview(
    source: QuotaLedger | None = None,
    *,
    hours: float = 24.0,
    buckets: int = 24,
    now: datetime | None = None,
) -> CapacityOverview:
    """Snapshot of pools, quotas, leases, the queue and the last ``hours`` of usage and cost."""
    source = source or ledger()
    now = now or source.now()
    window_start = now - timedelta(hours=hours)
    prices = gpu_hour_prices()

    pools = source.pools()
    pool_by_name = {pool.name: pool for pool in pools}
    quotas = source.quotas()
    active = [lease for lease in source.leases(state=LeaseState.ACTIVE) if lease.expires_at > now]
    waiting = source.requests(state=RequestState.WAITING)
    recent = _recent_leases(source, window_start, active)

    return CapacityOverview(
        generated_at=now,
        window_hours=hours,
        currency="USD",
        pools=[_pool_view(pool, active, waiting, now, prices) for pool in pools],
        quotas=[_quota_view(quota, pool_by_name.get(quota.pool), active) for quota in quotas],
        leases=[_lease_view(lease, now, price_of(pool_by_name.get(lease.pool), prices)) for lease in active],
        queue=_queue(waiting, now),
        costs=(costs := _costs(recent, window_start, now, pool_by_name, prices)),
        total_gpu_hours=round(sum(c.gpu_hours for c in costs), 4),
        total_cost=_total_cost(costs),
        waits=_waits(source, window_start, waiting, now),
        usage=_usage(recent, window_start, now, buckets, sum(pool.capacity for pool in pools)),
    )


def _recent_leases(source: QuotaLedger, window_start: datetime, active: Iterable[Lease]) -> list[Lease]:
    leases = {lease.lease_id: lease for lease in source.leases(since=window_start - _LEASE_LOOKBACK)}
    leases.update({lease.lease_id: lease for lease in active})
    return list(leases.values())


def gpu_amount(milli: int) -> int | float:
    """Milli-GPUs as GPUs for display: whole numbers stay integers (2), shares do not (0.25)."""
    return milli // MILLI if milli % MILLI == 0 else milli / MILLI


def _pool_view(
    pool: Pool,
    active: Sequence[Lease],
    waiting: Sequence[QueuedRequest],
    now: datetime,
    prices: dict[str, float],
) -> PoolView:
    used = gpu_amount(sum(lease.milli for lease in active if lease.pool == pool.name))
    queued = [r for r in waiting if r.pool == pool.name and not _stale(r, now)]
    return PoolView(
        name=pool.name,
        gpu_type=pool.gpu_type,
        capacity=pool.capacity,
        used=used,
        free=max(
            0,
            gpu_amount(
                pool.capacity * MILLI - sum(lease.milli for lease in active if lease.pool == pool.name)
            ),
        ),
        utilization=round(used / pool.capacity, 4) if pool.capacity else 0.0,
        waiting_requests=len(queued),
        waiting_gpus=gpu_amount(sum(r.gpu_milli or r.gpus * MILLI for r in queued)),
        price_per_gpu_hour=price_of(pool, prices),
    )


def _quota_view(quota: Quota, pool: Pool | None, active: Sequence[Lease]) -> QuotaView:
    held = [lease for lease in active if lease.team == quota.team and lease.pool == quota.pool]
    return QuotaView(
        team=quota.team,
        pool=quota.pool,
        nominal=quota.nominal,
        borrowing_limit=quota.borrowing_limit,
        lending_limit=quota.lending_limit,
        limit=quota.limit(pool.capacity if pool else quota.nominal),
        used=gpu_amount(sum(lease.milli for lease in held)),
        borrowed=sum(lease.borrowed for lease in held),
    )


def _lease_view(lease: Lease, now: datetime, price: float | None) -> LeaseView:
    dag_id, run_id, task_id = split_key(lease.key)
    gpu_hours = lease.gpu_hours(now)
    return LeaseView(
        lease_id=lease.lease_id,
        key=lease.key,
        dag_id=dag_id,
        run_id=run_id,
        task_id=task_id,
        team=lease.team,
        pool=lease.pool,
        gpus=gpu_amount(lease.milli),
        nodes=list(lease.node_names),
        borrowed=lease.borrowed,
        priority=lease.priority,
        acquired_at=lease.acquired_at,
        expires_at=lease.expires_at,
        held_seconds=round(lease.held_seconds(now), 1),
        gpu_hours=round(gpu_hours, 4),
        cost=None if price is None else round(gpu_hours * price, 2),
    )


def _stale(request: QueuedRequest, now: datetime) -> bool:
    return (now - request.last_seen_at).total_seconds() > request.stale_after_seconds


def _queue(waiting: Sequence[QueuedRequest], now: datetime) -> list[QueueEntry]:
    ordered = sorted(waiting, key=lambda r: (-r.priority, r.enqueued_at, r.id))
    entries = []
    for position, request in enumerate(ordered, start=1):
        dag_id, run_id, task_id = split_key(request.key)
        entries.append(
            QueueEntry(
                position=position,
                key=request.key,
                dag_id=dag_id,
                run_id=run_id,
                task_id=task_id,
                team=request.team,
                pool=request.pool,
                gpus=request.gpus,
                priority=request.priority,
                enqueued_at=request.enqueued_at,
                wait_seconds=round(request.wait_seconds(now), 1),
                stale=_stale(request, now),
                reason=request.wait_reason,
                reason_message=request.wait_message,
                gpus_ahead=request.gpus_ahead,
            )
        )
    return entries


def _costs(
    leases: Sequence[Lease], start: datetime, now: datetime, pools: dict[str, Pool], prices: dict[str, float]
) -> list[TeamCost]:
    hours: dict[tuple[str, str], float] = defaultdict(float)
    for lease in leases:
        seconds = _overlap_seconds(lease, start, now, now)
        if seconds > 0:
            hours[(lease.team, lease.pool)] += lease.gpus * seconds / 3600.0
    costs = []
    for (team, pool), gpu_hours in sorted(hours.items()):
        price = price_of(pools.get(pool), prices)
        costs.append(
            TeamCost(
                team=team,
                pool=pool,
                gpu_hours=round(gpu_hours, 4),
                cost=None if price is None else round(gpu_hours * price, 2),
            )
        )
    return costs


def _total_cost(costs: Sequence[TeamCost]) -> float | None:
    priced = [c.cost for c in costs if c.cost is not None]
    return round(sum(priced), 2) if priced else None


def _waits(
    source: QuotaLedger, start: datetime, waiting: Sequence[QueuedRequest], now: datetime
) -> WaitStats:
    admitted = [
        r.wait_seconds(now)
        for r in source.requests(state=RequestState.ADMITTED)
        if r.admitted_at is not None and r.admitted_at >= start
    ]
    live = [r.wait_seconds(now) for r in waiting if not _stale(r, now)]
    return WaitStats(
        admitted=len(admitted),
        p50_seconds=_percentile(admitted, 0.5),
        p95_seconds=_percentile(admitted, 0.95),
        max_waiting_seconds=max(live) if live else None,
    )


def _usage(leases: Sequence[Lease], start: datetime, now: datetime, buckets: int, capacity: int) -> Usage:
    span = (now - start).total_seconds()
    bucket_seconds = max(1, int(span // buckets))
    edges = [start + timedelta(seconds=i * bucket_seconds) for i in range(buckets)]
    per_team: dict[str, list[float]] = defaultdict(lambda: [0.0] * buckets)
    for lease in leases:
        for index, edge in enumerate(edges):
            end = min(edge + timedelta(seconds=bucket_seconds), now)
            seconds = _overlap_seconds(lease, edge, end, now)
            if seconds > 0:
                per_team[lease.team][index] += lease.gpus * seconds / bucket_seconds
    return Usage(
        start=start,
        bucket_seconds=bucket_seconds,
        buckets=edges,
        capacity=capacity,
        series=[
            UsageSeries(team=team, gpus=[round(v, 3) for v in values])
            for team, values in sorted(per_team.items())
        ],
    )


def set_quota(
    team: str, pool: str, *, nominal: int, borrowing_limit: int | None, lending_limit: int | None
) -> Quota:
    """Create or change a team's quota in a pool (the pool must exist)."""
    return ledger().upsert_quota(
        team, pool, nominal=nominal, borrowing_limit=borrowing_limit, lending_limit=lending_limit
    )


def remove_quota(team: str, pool: str) -> bool:
    """Delete a team's quota in a pool; returns whether there was one."""
    return ledger().remove_quota(team, pool)


def set_pool(name: str, *, capacity: int, gpu_type: str | None) -> Pool:
    """Register a pool or change its capacity."""
    return ledger().upsert_pool(name, capacity=capacity, gpu_type=gpu_type)


def pool_exists(name: str) -> bool:
    return ledger().pool(name) is not None
