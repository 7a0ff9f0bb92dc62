"""A prometheus-client collector that reads the quota ledger at scrape time.

Nothing is counted in process memory: each scrape reads the ledger (the same SQL database
every sensor, trigger and CLI writes), so the figures are right whichever process changed
it, and an API server restart loses nothing. The queue's reasons are the ones the last
admission round stored in each request's row (``GROUP BY wait_reason``); only rows no round
has classified yet are explained by replaying the policy
(:func:`nuro_ml.capacity.policy.decide` over :meth:`QuotaLedger.snapshot`, classified by
:mod:`nuro_ml.capacity.reasons`). Aggregates over all leases and requests
(GPU-hours, the wait histogram) are computed by the database, so a scrape costs a handful
of grouped queries however long the ledger's history is.

.. code-block:: python

    registry = CollectorRegistry(auto_describe=True)
    registry.register(LedgerCollector(QuotaLedger()))
    text = generate_latest(registry)  # prometheus_client.openmetrics.exposition
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import ColumnElement, Connection, and_, case, func, literal, or_, select

from nuro_ml.capacity import schema
from nuro_ml.capacity.ledger import QuotaLedger
from nuro_ml.capacity.ledger_rows import quota_from_row
from nuro_ml.capacity.policy import PolicyConfig, Snapshot, decide
from nuro_ml.capacity.reasons import WaitReason, classify
from nuro_ml.capacity.records import LeaseState, RequestState
from nuro_ml.capacity.view import gpu_hour_prices, price_of
from nuro_ml.metrics import catalogue as cat
from nuro_ml.metrics.catalogue import Series

log = logging.getLogger(__name__)

#: Pool (name or GPU type) -> USD per GPU-hour; the capacity page's prices by default.
PriceSource = Callable[[], dict[str, float]]


def seconds_between(conn: Connection, start: Any, end: Any) -> ColumnElement[Any]:
    """``end - start`` in seconds as a SQL expression, on SQLite and PostgreSQL."""
    if conn.dialect.name == "postgresql":
        return func.extract("epoch", end - start)  # type: ignore[no-any-return]
    return (func.julianday(end) - func.julianday(start)) * 86400.0


def _family(series: Series, **extra: Any) -> Any:
    if series.kind == "gauge":
        return GaugeMetricFamily(series.name, series.help, labels=series.labels, **extra)
    if series.kind == "counter":
        return CounterMetricFamily(series.name, series.help, labels=series.labels, **extra)
    return HistogramMetricFamily(series.name, series.help, labels=series.labels, unit="seconds")


class LedgerCollector(Collector):
    """Ledger state as Prometheus series (see :data:`nuro_ml.metrics.catalogue.SCRAPED`).

    :param ledger: The ledger to read; defaults to the configured one (``NURO_ML_LEDGER_URL``).
    :param policy: Admission policy whose decision explains the queue (``fair`` by default,
        as the sensor's default).
    :param prices: Callable giving USD per GPU-hour by pool name or GPU type; the cost
        series is left out for pools with no price.
    """

    def __init__(
        self,
        ledger: QuotaLedger | None = None,
        *,
        policy: PolicyConfig | str = "fair",
        prices: PriceSource | None = None,
    ) -> None:
        self._ledger = ledger
        self.policy = policy
        self._prices = prices or gpu_hour_prices

    @property
    def ledger(self) -> QuotaLedger:
        if self._ledger is None:
            self._ledger = QuotaLedger()
        return self._ledger

    def describe(self) -> Iterable[Metric]:
        # Families are fixed; describing them lets a registry reject name clashes up front.
        return [_family(s) for s in cat.SCRAPED]

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        try:
            families = self._read()
            up = 1.0
        except Exception:
            log.exception("Scrape of ledger %s failed", self.ledger.safe_url)
            families, up = [], 0.0
        yield from families
        ledger_up = _family(cat.LEDGER_UP)
        ledger_up.add_metric([], up)
        yield ledger_up
        duration = _family(cat.SCRAPE_SECONDS)
        duration.add_metric([], time.perf_counter() - started)
        yield duration

    # -- reading ----------------------------------------------------------------------

    def _read(self) -> list[Metric]:
        ledger = self.ledger
        pools = {p.name: p for p in ledger.pools()}
        # Every figure from one read transaction and grouped queries; the policy's snapshot (every
        # waiting request and active lease as objects) is loaded only to explain rows no
        # admission round has classified yet.
        with ledger.engine.connect() as conn, conn.begin():
            now_dt = ledger.now()
            queue = self._queue(conn, now_dt)
            unclassified = self._unclassified_keys(conn, now_dt) if queue.unclassified else set()
            quota_rows = conn.execute(select(schema.quotas)).all()
            active = self._active(conn, now_dt)
            overdue = self._overdue(conn, now_dt)
            hours = self._gpu_hours(conn, now_dt)
            wait = self._wait_histogram(conn)
        now = now_dt.timestamp()

        pending_requests = _family(cat.PENDING_REQUESTS)
        pending_gpus = _family(cat.PENDING_GPUS)
        oldest = _family(cat.OLDEST_WAIT)
        counts = queue.counts
        if unclassified:
            # Rows no admission round has classified yet (enqueued, not polled; or written by
            # an older release): replay the policy for just those.
            for labels in self._replayed(ledger.snapshot(), unclassified):
                counts[labels] = counts.get(labels, 0) + 1
        for labels, count in sorted(counts.items()):
            pending_requests.add_metric(list(labels), count)
        for team_pool, total in sorted(queue.gpus.items()):
            pending_gpus.add_metric(list(team_pool), total)
            oldest.add_metric(list(team_pool), max(0.0, now - queue.first[team_pool]))

        quota_nominal = _family(cat.QUOTA_NOMINAL)
        quota_borrowing = _family(cat.QUOTA_BORROWING)
        for quota in sorted(map(quota_from_row, quota_rows), key=lambda q: (q.team, q.pool)):
            quota_nominal.add_metric([quota.team, quota.pool], float(quota.nominal))
            if quota.borrowing_limit is not None:
                quota_borrowing.add_metric([quota.team, quota.pool], float(quota.borrowing_limit))

        capacity = _family(cat.POOL_CAPACITY)
        for pool in pools.values():
            capacity.add_metric([pool.name, pool.gpu_type or ""], pool.capacity)

        leases_active = _family(cat.LEASES_ACTIVE)
        leased_gpus = _family(cat.LEASED_GPUS)
        for team_pool, (held, total) in sorted(active.items()):
            leases_active.add_metric(list(team_pool), held)
            leased_gpus.add_metric(list(team_pool), total)

        past_expiry = _family(cat.LEASES_PAST_EXPIRY)
        for team_pool, count in sorted(overdue.items()):
            past_expiry.add_metric(list(team_pool), count)
        gpu_hours = _family(cat.GPU_HOURS)
        cost = _family(cat.GPU_COST)
        prices = self._prices()
        for (team, pool_name), value in sorted(hours.items()):
            gpu_hours.add_metric([team, pool_name], value)
            price = price_of(pools.get(pool_name), prices)
            if price is not None:
                cost.add_metric([team, pool_name], value * price)

        histogram = _family(cat.ADMISSION_WAIT)
        for (team, pool_name), (buckets, wait_sum) in sorted(wait.items()):
            histogram.add_metric([team, pool_name], buckets, wait_sum)

        return [
            pending_requests,
            pending_gpus,
            oldest,
            histogram,
            leases_active,
            leased_gpus,
            past_expiry,
            gpu_hours,
            cost,
            quota_nominal,
            quota_borrowing,
            capacity,
        ]

    def _live_waiting(self, conn: Connection, now: datetime) -> ColumnElement[bool]:
        """Waiting rows the policy would consider (as :meth:`QuotaLedger.snapshot` selects them)."""
        requests = schema.requests
        now_value = literal(now, schema.UTCDateTime())
        return and_(
            requests.c.state == RequestState.WAITING.value,
            seconds_between(conn, requests.c.last_seen_at, now_value) <= requests.c.stale_after_seconds,
            or_(requests.c.deadline.is_(None), requests.c.deadline > now_value),
        )

    def _queue(self, conn: Connection, now: datetime) -> _Queue:
        """Live waiting requests grouped by team, pool and their stored wait reason."""
        requests = schema.requests
        milli = func.coalesce(requests.c.gpu_milli, requests.c.gpus * 1000)
        rows = conn.execute(
            select(
                requests.c.team,
                requests.c.pool,
                requests.c.wait_reason,
                func.count(),
                func.sum(milli),
                func.min(requests.c.enqueued_at),
            )
            .where(self._live_waiting(conn, now))
            .group_by(requests.c.team, requests.c.pool, requests.c.wait_reason)
        ).all()
        queue = _Queue()
        for team, pool, reason, count, total_milli, enqueued in rows:
            team_pool = (team, pool)
            if reason is None:
                queue.unclassified += int(count)
            else:
                queue.counts[(team, pool, reason)] = int(count)
            queue.gpus[team_pool] = queue.gpus.get(team_pool, 0.0) + float(total_milli or 0) / 1000.0
            # min() over a DateTime column comes back as a string on SQLite: parse it.
            first = _epoch(enqueued)
            queue.first[team_pool] = min(queue.first.get(team_pool, first), first)
        return queue

    def _unclassified_keys(self, conn: Connection, now: datetime) -> set[str]:
        requests = schema.requests
        return set(
            conn.execute(
                select(requests.c.request_key).where(
                    and_(self._live_waiting(conn, now), requests.c.wait_reason.is_(None))
                )
            ).scalars()
        )

    def _replayed(self, snapshot: Snapshot, keys: set[str]) -> list[tuple[str, str, str]]:
        """(team, pool, reason) for each of ``keys``, from the policy's decision over ``snapshot``."""
        decision = decide(snapshot, self.policy)
        records = classify(snapshot, decision, self.policy)
        admitted_now = set(decision.admitted_keys)
        out = []
        for request in snapshot.pending:
            if request.key not in keys:
                continue
            record = records.get(request.key)
            # Admitted by this decision: the waiter takes the lease on its next round.
            reason = "admissible" if record is None or request.key in admitted_now else record.reason.value
            out.append((request.team, request.pool, reason))
        return out

    def _active(self, conn: Connection, now: datetime) -> dict[tuple[str, str], tuple[int, float]]:
        """(leases, GPUs) held per team and pool: active and not past expiry, as the policy counts."""
        leases = schema.leases
        milli = func.coalesce(leases.c.gpu_milli, leases.c.gpus * 1000)
        rows = conn.execute(
            select(leases.c.team, leases.c.pool, func.count(), func.sum(milli))
            .where(and_(leases.c.state == LeaseState.ACTIVE.value, leases.c.expires_at > now))
            .group_by(leases.c.team, leases.c.pool)
        ).all()
        return {(r[0], r[1]): (int(r[2]), float(r[3] or 0) / 1000.0) for r in rows}

    def _overdue(self, conn: Connection, now: datetime) -> dict[tuple[str, str], int]:
        leases = schema.leases
        rows = conn.execute(
            select(leases.c.team, leases.c.pool, func.count())
            .where(and_(leases.c.state == LeaseState.ACTIVE.value, leases.c.expires_at <= now))
            .group_by(leases.c.team, leases.c.pool)
        ).all()
        return {(r[0], r[1]): int(r[2]) for r in rows}

    def _gpu_hours(self, conn: Connection, now: datetime) -> dict[tuple[str, str], float]:
        leases = schema.leases
        # A released lease counts to its release, an expired one to its expiry, an active one
        # to now (not past its expiry: an unreleased lease past expiry holds nothing real).
        now_value = literal(now, schema.UTCDateTime())
        end = case(
            (leases.c.released_at.is_not(None), leases.c.released_at),
            (leases.c.state == LeaseState.EXPIRED.value, leases.c.expires_at),
            (leases.c.expires_at < now_value, leases.c.expires_at),
            else_=now_value,
        )
        held = seconds_between(conn, leases.c.acquired_at, end)
        # GPU shares count as their fraction; rows from before milli-GPUs count whole GPUs.
        gpus = func.coalesce(leases.c.gpu_milli, leases.c.gpus * 1000) / 1000.0
        rows = conn.execute(
            select(leases.c.team, leases.c.pool, func.sum(gpus * held)).group_by(leases.c.team, leases.c.pool)
        ).all()
        return {(r[0], r[1]): max(0.0, float(r[2] or 0.0)) / 3600.0 for r in rows}

    def _wait_histogram(
        self, conn: Connection
    ) -> dict[tuple[str, str], tuple[list[tuple[str, float]], float]]:
        requests = schema.requests
        # Each wait is computed once, in a materialized CTE: inlined, the database would parse
        # both timestamps again for every bucket bound the CASE below compares against.
        waits = (
            select(
                requests.c.team,
                requests.c.pool,
                seconds_between(conn, requests.c.enqueued_at, requests.c.admitted_at).label("wait"),
            )
            .where(and_(requests.c.state == RequestState.ADMITTED.value, requests.c.admitted_at.is_not(None)))
            .cte("waits")
            .prefix_with("MATERIALIZED")
        )
        # One row per (team, pool, bucket): the database counts, Python makes them cumulative.
        bucket = case(
            *((waits.c.wait <= bound, index) for index, bound in enumerate(cat.WAIT_BUCKETS)),
            else_=len(cat.WAIT_BUCKETS),
        ).label("bucket")
        rows = conn.execute(
            select(waits.c.team, waits.c.pool, bucket, func.count(), func.sum(waits.c.wait)).group_by(
                waits.c.team, waits.c.pool, bucket
            )
        ).all()
        counts: dict[tuple[str, str], list[float]] = {}
        sums: dict[tuple[str, str], float] = {}
        for team, pool, index, count, total in rows:
            per_bucket = counts.setdefault((team, pool), [0.0] * (len(cat.WAIT_BUCKETS) + 1))
            per_bucket[int(index)] += float(count)
            sums[(team, pool)] = sums.get((team, pool), 0.0) + float(total or 0.0)
        out: dict[tuple[str, str], tuple[list[tuple[str, float]], float]] = {}
        for team_pool, per_bucket in counts.items():
            running = 0.0
            buckets: list[tuple[str, float]] = []
            for bound, count in zip((*map(_bound, cat.WAIT_BUCKETS), "+Inf"), per_bucket, strict=True):
                running += count
                buckets.append((bound, running))
            out[team_pool] = (buckets, max(0.0, sums[team_pool]))
        return out


@dataclass
class _Queue:
    """Live waiting requests: count by (team, pool, reason), GPUs and oldest enqueue by pool."""

    counts: dict[tuple[str, str, str], int] = field(default_factory=dict)
    gpus: dict[tuple[str, str], float] = field(default_factory=dict)
    first: dict[tuple[str, str], float] = field(default_factory=dict)
    unclassified: int = 0


def _epoch(value: datetime | str) -> float:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def _bound(value: float) -> str:
    return f"{float(value)}"


#: Reason label values a pending request can carry (the classifier's codes plus "admissible").
REASON_VALUES: frozenset[str] = frozenset({r.value for r in WaitReason} | {"admissible"})
