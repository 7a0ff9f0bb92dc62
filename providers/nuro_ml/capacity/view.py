"""The capacity read model: what ``nuro-ml quota show``, the capacity page and its REST API show.

One snapshot of the quota ledger becomes pools with their usage, team quotas, active leases,
the waiting queue, GPU-hours and their cost, queue-wait percentiles and a usage timeline.
Every view of capacity is built here, so they agree on three things:

- a lease counts as held only while ``expires_at`` is in the future: one still marked active
  after its TTL ran out (its holder died before the ledger expired it) holds no GPUs, as the
  admission policy already sees it;
- percentiles are linear-interpolated (``nuro_ml.capacity.stats.percentile``);
- the queue is in the order ``nuro_ml.capacity.policy.decide`` admits it, per pool.

GPU-hour prices come from ``NURO_ML_GPU_HOUR_PRICES``, a JSON object mapping a pool name
or GPU type to USD per GPU-hour (pool names win); GPU types it does not name use the AWS
on-demand list prices below. A pool with no known price shows GPU-hours without a cost.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TypedDict

from pydantic import BaseModel

from nuro_ml.capacity.ledger import QuotaLedger
from nuro_ml.capacity.policy import PolicyConfig, decide, get_policy
from nuro_ml.capacity.records import (
    MILLI,
    Lease,
    LeaseState,
    Pool,
    QueuedRequest,
    Quota,
    RequestState,
    gpus_from_milli,
)
from nuro_ml.capacity.stats import percentile
from nuro_ml.task_key import TaskKey

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
    """A team's quota in a pool and its use, in GPUs (fractional where they are: 2.5)."""

    team: str
    pool: str
    nominal: int | float
    borrowing_limit: int | float | None
    lending_limit: int | float | None
    limit: int | float
    used: int | float
    borrowed: int


class TaskGpus(BaseModel):
    """GPUs a task instance holds or asks for; the key's parts are None for a key no task wrote."""

    #: The task instance's key (``dag_id/run_id/task_id/map_index``).
    key: str
    dag_id: str | None
    run_id: str | None
    task_id: str | None
    map_index: int | None = None
    team: str
    pool: str


class LeaseView(TaskGpus):
    lease_id: str
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


class QueueEntry(TaskGpus):
    #: Place in its pool's queue as the admission policy orders it (1 goes first); requests the
    #: policy does not see (stale, or past their deadline) follow in arrival order.
    position: int
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


class TeamWaits(BaseModel):
    """Queue wait of one team's requests admitted in the window."""

    team: str
    admitted: int
    p50_seconds: float | None
    p95_seconds: float | None
    max_seconds: float | None


class WaitStats(BaseModel):
    """Queue wait of requests admitted in the window (all teams, then per team), and the
    longest wait of a live request still in the queue."""

    admitted: int
    p50_seconds: float | None
    p95_seconds: float | None
    max_waiting_seconds: float | None
    teams: list[TeamWaits] = []


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
    #: The admission policy whose order the queue shows.
    policy: str
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


def price_of(pool: Pool | None, prices: Mapping[str, float]) -> float | None:
    if pool is None:
        return None
    if pool.name in prices:
        return prices[pool.name]
    return prices.get(pool.gpu_type or "")


def _overlap_seconds(lease: Lease, start: datetime, end: datetime, now: datetime) -> float:
    lease_end = lease.acquired_at + timedelta(seconds=lease.held_seconds(now))
    return max(0.0, (min(lease_end, end) - max(lease.acquired_at, start)).total_seconds())


def capacity_overview(
    source: QuotaLedger,
    *,
    hours: float = 24.0,
    buckets: int = 24,
    now: datetime | None = None,
    policy: PolicyConfig | str = "fair",
    prices: Mapping[str, float] | None = None,
) -> CapacityOverview:
    """Pools, quotas, leases, the queue in ``policy``'s order and the last ``hours`` of usage and cost.

    :param source: the quota ledger to read.
    :param hours: window of the usage timeline, the costs and the wait percentiles.
    :param buckets: bars in the usage timeline.
    :param now: the time the view is taken at; the ledger's clock by default.
    :param policy: admission policy whose order the queue shows (``fair``, ``fifo``, ...).
    :param prices: USD per GPU-hour by pool name or GPU type; :func:`gpu_hour_prices` by default.
    """
    config = get_policy(policy)
    now = now or source.now()
    window_start = now - timedelta(hours=hours)
    prices = gpu_hour_prices() if prices is None else dict(prices)

    pools = source.pools()
    pool_by_name = {pool.name: pool for pool in pools}
    quotas = source.quotas()
    active = held_leases(source, now)
    waiting = source.requests(state=RequestState.WAITING)
    recent = _recent_leases(source, window_start, active)

    return CapacityOverview(
        generated_at=now,
        window_hours=hours,
        policy=config.name,
        currency="USD",
        pools=[_pool_view(pool, active, waiting, now, prices) for pool in pools],
        quotas=[_quota_view(quota, pool_by_name.get(quota.pool), active) for quota in quotas],
        leases=[_lease_view(lease, now, price_of(pool_by_name.get(lease.pool), prices)) for lease in active],
        queue=_queue(waiting, policy_order(source, config), now),
        costs=(costs := _costs(recent, window_start, now, pool_by_name, prices)),
        total_gpu_hours=round(sum(c.gpu_hours for c in costs), 4),
        total_cost=_total_cost(costs),
        waits=_waits(source, window_start, waiting, now),
        usage=_usage(recent, window_start, now, buckets, sum(pool.capacity for pool in pools)),
    )


def held_leases(source: QuotaLedger, now: datetime) -> list[Lease]:
    """Active leases whose TTL has not run out: those that hold GPUs at ``now``."""
    return [lease for lease in source.leases(state=LeaseState.ACTIVE) if lease.expires_at > now]


def policy_order(source: QuotaLedger, policy: PolicyConfig | str = "fair") -> dict[str, int]:
    """Position of each live waiting request in its pool's queue, as ``policy`` decides it (0 first)."""
    return dict(decide(source.snapshot(), policy).position)


def _recent_leases(source: QuotaLedger, window_start: datetime, active: Iterable[Lease]) -> list[Lease]:
    leases = {lease.lease_id: lease for lease in source.leases(since=window_start - _LEASE_LOOKBACK)}
    leases.update({lease.lease_id: lease for lease in active})
    return list(leases.values())


#: Milli-GPUs as GPUs for display: whole numbers stay integers (2), shares do not (0.25).
gpu_amount = gpus_from_milli


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


class _KeyParts(TypedDict):
    dag_id: str | None
    run_id: str | None
    task_id: str | None
    map_index: int | None


def _key_parts(key: str) -> _KeyParts:
    """The task instance a lease or request key names; all None for a key no task wrote."""
    task = TaskKey.try_parse(key)
    if task is None:
        return _KeyParts(dag_id=None, run_id=None, task_id=None, map_index=None)
    return _KeyParts(dag_id=task.dag_id, run_id=task.run_id, task_id=task.task_id, map_index=task.map_index)


def _lease_view(lease: Lease, now: datetime, price: float | None) -> LeaseView:
    gpu_hours = lease.gpu_hours(now)
    return LeaseView(
        lease_id=lease.lease_id,
        key=lease.key,
        **_key_parts(lease.key),
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


def _queue(waiting: Sequence[QueuedRequest], order: Mapping[str, int], now: datetime) -> list[QueueEntry]:
    unseen = len(order)

    def place(request: QueuedRequest) -> tuple[str, int, datetime, int]:
        return (request.pool, order.get(request.key, unseen), request.enqueued_at, request.id)

    entries = []
    position: dict[str, int] = defaultdict(int)
    for request in sorted(waiting, key=place):
        position[request.pool] += 1
        entries.append(
            QueueEntry(
                position=position[request.pool],
                key=request.key,
                **_key_parts(request.key),
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
        r
        for r in source.requests(state=RequestState.ADMITTED)
        if r.admitted_at is not None and r.admitted_at >= start
    ]
    by_team: dict[str, list[float]] = defaultdict(list)
    for request in admitted:
        by_team[request.team].append(request.wait_seconds(now))
    waits = [wait for team_waits in by_team.values() for wait in team_waits]
    live = [r.wait_seconds(now) for r in waiting if not _stale(r, now)]
    return WaitStats(
        admitted=len(waits),
        p50_seconds=_percentile(waits, 50),
        p95_seconds=_percentile(waits, 95),
        max_waiting_seconds=max(live) if live else None,
        teams=[
            TeamWaits(
                team=team,
                admitted=len(values),
                p50_seconds=_percentile(values, 50),
                p95_seconds=_percentile(values, 95),
                max_seconds=round(max(values), 1),
            )
            for team, values in sorted(by_team.items())
        ],
    )


def _percentile(values: Sequence[float], q: float) -> float | None:
    return round(percentile(values, q), 1) if values else None


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
