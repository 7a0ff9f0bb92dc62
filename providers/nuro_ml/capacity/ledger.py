"""The GPU quota ledger: pools, team quotas, leases and the request queue in one SQL database.

Every acquire is one transaction that locks the pool first (``BEGIN IMMEDIATE`` on SQLite,
``SELECT ... FOR UPDATE`` on the pool row on PostgreSQL), reclaims expired leases, reads
usage and checks the request with the same :func:`nuro_ml.capacity.policy.check_fit` the
admission policy uses, so no interleaving of acquires can exceed a pool's capacity or a
team's quota. Leases are keyed by task instance (see :func:`lease_key`): acquiring again with
the same key returns the lease already held, so a retried task gets its own lease back.

.. code-block:: python

    ledger = QuotaLedger()  # settings.ledger_url(): SQLite under the data directory
    ledger.upsert_pool("local", capacity=4)
    ledger.upsert_quota("perception", "local", nominal=4)
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, and_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Row, make_url
from sqlalchemy.exc import IntegrityError, OperationalError

from nuro_ml import settings
from nuro_ml.capacity import schema
from nuro_ml.capacity.backends.base import NodeCapacity, PoolCapacity
from nuro_ml.capacity.engine import READ_ONLY, get_engine
from nuro_ml.capacity.placement import (
    Demand,
    NodeSpec,
    NodeState,
    Placement,
    Share,
    TypicalTask,
    get_placement_policy,
    node_states,
    place,
    typical_workload,
)
from nuro_ml.capacity.policy import (
    Fit,
    Pending,
    PoolUsage,
    PoolView,
    Running,
    Snapshot,
    check_fit,
    gpu_amount,
)
from nuro_ml.capacity.reasons import WaitRecord
from nuro_ml.capacity.records import (
    MILLI,
    Lease,
    LeaseRequest,
    LeaseShare,
    LeaseState,
    Pool,
    QueuedRequest,
    Quota,
    RequestState,
    lease_key,
)
from nuro_ml.exceptions import CapacityError, QuotaExceededError

log = logging.getLogger(__name__)

#: Width of the ``wait_message`` column; longer sentences are cut to fit.
_WAIT_MESSAGE_CHARS = 1000

__all__ = ["QuotaLedger", "lease_key"]

#: A waiting request not refreshed for this many stale windows is dropped from the queue.
ABANDON_AFTER_STALE_WINDOWS = 10
#: Grace a lease gets between a reclaim request and its forced expiry.
DEFAULT_RECLAIM_GRACE_SECONDS = 300.0
_IN_CHUNK = 500
#: Recent requests of a pool whose shapes make the workload FGD measures fragmentation by.
WORKLOAD_WINDOW = 500
_LOCK_RETRIES = 5

_MIGRATED: set[str] = set()
_T = TypeVar("_T")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _chunks(items: Sequence[_T], size: int = _IN_CHUNK) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class QuotaLedger:
    """Quota and lease bookkeeping on SQLite (default) or PostgreSQL.

    :param url: SQLAlchemy URL of the ledger database; defaults to
        :func:`nuro_ml.settings.ledger_url` (``NURO_ML_LEDGER_URL`` or a SQLite file in the
        data directory). ``postgresql://`` URLs use the psycopg 3 driver.
    :param clock: Source of "now" (timezone-aware UTC), replaceable in tests and simulations.
    :param placement: Placement policy for pools with declared nodes (``first-fit``,
        ``best-fit``, ``fgd``, ``ours``): a request is admitted only where it can be placed.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
        placement: str = "ours",
    ) -> None:
        get_placement_policy(placement, typical_workload([Demand()]))  # fail fast on a bad name
        self.placement = placement
        self.url = url or settings.ledger_url()
        self._clock = clock or _utcnow
        self._engine: Engine | None = None

    def __repr__(self) -> str:
        return f"QuotaLedger({self.safe_url!r})"

    @property
    def safe_url(self) -> str:
        """The URL with any password masked, for logs and error messages."""
        return make_url(self.url).render_as_string(hide_password=True)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = get_engine(self.url)
            if self.url not in _MIGRATED:
                self.migrate()
        return self._engine

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def now(self) -> datetime:
        return self._clock()

    # -- transactions -------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A write transaction (SQLite: holds the write lock from its first statement)."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except OperationalError as err:
            raise CapacityError(f"ledger {self.safe_url}: {err}") from err

    @contextmanager
    def _read(self) -> Iterator[Connection]:
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
        for attempt in range(_LOCK_RETRIES):
            try:
                with engine.begin() as conn:
                    applied = schema.migrate(conn)
                break
            except (OperationalError, IntegrityError) as err:
                # Another process created the tables between our check and our CREATE.
                if attempt == _LOCK_RETRIES - 1:
                    raise CapacityError(f"ledger {self.safe_url}: migration failed: {err}") from err
                time.sleep(0.05 * (attempt + 1))
        _MIGRATED.add(self.url)
        if applied:
            log.info("Ledger %s migrated to schema version %s", self.safe_url, applied[-1])
        return applied

    def schema_version(self) -> int:
        with self._read() as conn:
            return schema.current_version(conn)

    # -- pools and quotas ---------------------------------------------------------------

    def _upsert(self, conn: Connection, table: Any, values: dict[str, Any], keys: Sequence[str]) -> None:
        if conn.dialect.name == "postgresql":
            stmt: Any = pg_insert(table).values(**values)
        else:
            stmt = sqlite_insert(table).values(**values)
        update_cols = {k: stmt.excluded[k] for k in values if k not in keys}
        conn.execute(stmt.on_conflict_do_update(index_elements=list(keys), set_=update_cols))

    def _lock_pool(self, conn: Connection, pool: str) -> Row[Any] | None:
        query = select(schema.pools).where(schema.pools.c.name == pool)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        return conn.execute(query).first()

    def upsert_pool(self, name: str, *, capacity: int, gpu_type: str | None = None) -> Pool:
        """Register a pool or change its capacity/GPU type (idempotent).

        Lowering capacity below what is leased keeps existing leases; new ones wait until
        usage falls under the new capacity.
        """
        if not name:
            raise CapacityError("pool name must not be empty")
        if int(capacity) < 0:
            raise CapacityError(f"pool {name!r}: capacity must be >= 0, got {capacity}")
        pool = Pool(name=name, capacity=int(capacity), gpu_type=gpu_type)
        with self._write() as conn:
            self._lock_pool(conn, name)
            self._upsert(
                conn,
                schema.pools,
                {"name": name, "capacity": pool.capacity, "gpu_type": gpu_type, "updated_at": self.now()},
                ["name"],
            )
        return pool

    def upsert_quota(
        self,
        team: str,
        pool: str,
        *,
        nominal: int,
        borrowing_limit: int | None = None,
        lending_limit: int | None = None,
    ) -> Quota:
        """Set a team's quota in a pool (idempotent). The pool must be registered first."""
        if not team:
            raise CapacityError("team name must not be empty")
        quota = Quota(
            team=team,
            pool=pool,
            nominal=int(nominal),
            borrowing_limit=None if borrowing_limit is None else int(borrowing_limit),
            lending_limit=None if lending_limit is None else int(lending_limit),
        )
        with self._write() as conn:
            if self._lock_pool(conn, pool) is None:
                raise CapacityError(
                    f"cannot set quota of team {team!r}: pool {pool!r} is not registered in ledger "
                    f"{self.safe_url} (register it with upsert_pool or `nuro-ml quota set-pool`)"
                )
            self._upsert(
                conn,
                schema.quotas,
                {
                    "team": team,
                    "pool": pool,
                    "nominal": quota.nominal,
                    "borrowing_limit": quota.borrowing_limit,
                    "lending_limit": quota.lending_limit,
                    "updated_at": self.now(),
                },
                ["team", "pool"],
            )
        return quota

    def remove_quota(self, team: str, pool: str) -> bool:
        """Delete a team's quota in a pool; existing leases are kept. Returns whether one existed."""
        with self._write() as conn:
            self._lock_pool(conn, pool)
            result = conn.execute(
                schema.quotas.delete().where(and_(schema.quotas.c.team == team, schema.quotas.c.pool == pool))
            )
        return bool(result.rowcount)

    def pools(self) -> list[Pool]:
        with self._read() as conn:
            rows = conn.execute(select(schema.pools).order_by(schema.pools.c.name)).all()
        return [Pool(name=r.name, capacity=r.capacity, gpu_type=r.gpu_type) for r in rows]

    def pool(self, name: str) -> Pool | None:
        return next((p for p in self.pools() if p.name == name), None)

    def quotas(self, pool: str | None = None) -> list[Quota]:
        query = select(schema.quotas).order_by(schema.quotas.c.pool, schema.quotas.c.team)
        if pool is not None:
            query = query.where(schema.quotas.c.pool == pool)
        with self._read() as conn:
            rows = conn.execute(query).all()
        return [_quota(r) for r in rows]

    # -- nodes --------------------------------------------------------------------------

    def set_nodes(self, pool: str, nodes: Sequence[NodeSpec]) -> Pool:
        """Declare the nodes of a pool (replacing those declared before); idempotent.

        The pool's capacity becomes its nodes' GPUs. Leases already held keep their shares;
        shares on nodes no longer declared stop counting against any node.
        """
        names = [n.name for n in nodes]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise CapacityError(f"pool {pool!r}: nodes {duplicates} are declared more than once")
        now = self.now()
        with self._write() as conn:
            row = self._lock_pool(conn, pool)
            if row is None:
                raise CapacityError(
                    f"cannot declare nodes of pool {pool!r}: it is not registered in ledger {self.safe_url}"
                )
            conn.execute(schema.nodes.delete().where(schema.nodes.c.pool == pool))
            if nodes:
                conn.execute(
                    schema.nodes.insert(),
                    [
                        {
                            "pool": pool,
                            "name": n.name,
                            "gpus": n.gpus,
                            "gpu_model": n.gpu_model,
                            "cpu_milli": n.cpu_milli,
                            "memory_mib": n.memory_mib,
                            "updated_at": now,
                        }
                        for n in nodes
                    ],
                )
            capacity = sum(n.gpus for n in nodes)
            conn.execute(
                update(schema.pools)
                .where(schema.pools.c.name == pool)
                .values(capacity=capacity, updated_at=now)
            )
        return Pool(name=pool, capacity=capacity, gpu_type=row.gpu_type)

    def nodes(self, pool: str) -> list[NodeSpec]:
        with self._read() as conn:
            return self._nodes(conn, pool)

    def _nodes(self, conn: Connection, pool: str) -> list[NodeSpec]:
        rows = conn.execute(
            select(schema.nodes).where(schema.nodes.c.pool == pool).order_by(schema.nodes.c.name)
        ).all()
        return [NodeSpec(r.name, r.gpus, r.gpu_model, r.cpu_milli, r.memory_mib) for r in rows]

    def node_usage(self, pool: str) -> list[NodeState]:
        """Each node of ``pool`` with the milli-GPUs still free per GPU after active leases."""
        now = self.now()
        with self._read() as conn:
            specs = self._nodes(conn, pool)
            live = conn.execute(
                select(schema.leases.c.lease_id).where(
                    and_(
                        schema.leases.c.pool == pool,
                        schema.leases.c.state == LeaseState.ACTIVE.value,
                        schema.leases.c.expires_at > now,
                    )
                )
            ).scalars()
            return node_states(specs, self._held_shares(conn, list(live)))

    def _held_shares(self, conn: Connection, lease_ids: Sequence[str]) -> dict[str, list[Share]]:
        held: dict[str, list[Share]] = {}
        for chunk in _chunks(list(lease_ids)):
            for row in conn.execute(
                select(schema.lease_shares).where(schema.lease_shares.c.lease_id.in_(chunk))
            ).all():
                held.setdefault(row.node, []).append(Share(row.node, row.gpu, row.milli))
        return held

    def _place(
        self,
        conn: Connection,
        request: LeaseRequest,
        live: Sequence[str],
        observed: PoolCapacity | None = None,
        unseen: Sequence[str] = (),
    ) -> tuple[bool, Placement | None]:
        """Place ``request`` on the pool's free node capacity (under the pool lock).

        Returns (admissible, placement): placement ``None`` with True when the pool has no
        declared nodes (it is counted as a whole); (False, None) when the request must wait.
        Raises when no node of the pool could ever hold it.
        """
        specs = self._nodes(conn, request.pool)
        seen = {n.name: n for n in observed.nodes} if observed is not None else {}
        if not specs and seen:
            specs = [NodeSpec(n.name, n.total_gpus, n.gpu_type) for n in seen.values()]
        if not specs:
            return True, None
        demand = Demand(
            gpu_milli=request.gpu_share,
            gpus_per_worker=request.gpus // request.nodes,
            workers=request.nodes,
            gpu_model=request.gpu_model,
        )
        policy = get_placement_policy(self.placement, self._workload(conn, request, demand))
        states = node_states(specs, self._held_shares(conn, live))
        if seen:
            cap_by_observed(states, seen, self._held_shares(conn, unseen))
        placement = place(states, demand, policy)
        if placement is not None:
            return True, placement
        if place([NodeState.empty(s) for s in specs], demand, policy) is None:
            per_node = gpu_amount(demand.worker_milli, MILLI)
            model = f" of model {request.gpu_model}" if request.gpu_model else ""
            raise QuotaExceededError(
                f"request {request.key!r} for {request.nodes} node(s) x {per_node} GPUs{model} can never "
                f"be placed on the nodes of pool {request.pool!r} (ledger {self.safe_url})"
            )
        return False, None

    def _workload(self, conn: Connection, request: LeaseRequest, demand: Demand) -> tuple[TypicalTask, ...]:
        """The pool's recent request shapes (and this one): the workload FGD measures against."""
        rows = conn.execute(
            select(
                schema.requests.c.gpus,
                schema.requests.c.nodes,
                schema.requests.c.share_milli,
                schema.requests.c.gpu_model,
            )
            .where(schema.requests.c.pool == request.pool)
            .order_by(schema.requests.c.id.desc())
            .limit(WORKLOAD_WINDOW)
        ).all()
        shapes = [demand]
        for row in rows:
            nodes = max(1, int(row.nodes))
            shapes.append(
                Demand(
                    gpu_milli=int(row.share_milli or MILLI),
                    gpus_per_worker=max(1, int(row.gpus) // nodes),
                    workers=1,
                    gpu_model=row.gpu_model,
                )
            )
        return typical_workload(shapes)

    # -- the request queue --------------------------------------------------------------

    def enqueue(self, request: LeaseRequest) -> QueuedRequest:
        """Put a request in the queue, or refresh the one already waiting under its key.

        A retried task keeps its original place (enqueue time) while its request waits.
        """
        now = self.now()
        for _attempt in range(_LOCK_RETRIES):
            try:
                with self._write() as conn:
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
                                request_key=request.key,
                                waiting_key=request.key,
                                team=request.team,
                                pool=request.pool,
                                gpus=request.gpus,
                                nodes=request.nodes,
                                gpu_milli=request.gpu_milli,
                                share_milli=request.gpu_share,
                                gpu_model=request.gpu_model,
                                priority=request.priority,
                                state=RequestState.WAITING.value,
                                ttl_seconds=request.ttl_seconds,
                                stale_after_seconds=request.stale_after_seconds,
                                enqueued_at=now,
                                last_seen_at=now,
                                deadline=request.deadline,
                            )
                        )
                        request_id = result.inserted_primary_key[0]  # type: ignore[index]
                    stored = conn.execute(
                        select(schema.requests).where(schema.requests.c.id == request_id)
                    ).one()
                return _queued(stored)
            except IntegrityError:
                # A concurrent enqueue of the same key won the insert: read theirs next round.
                continue
        raise CapacityError(f"ledger {self.safe_url}: could not enqueue request {request.key!r}")

    def touch(self, keys: Iterable[str]) -> set[str]:
        """Mark waiting requests as still wanted; returns the keys that are (still) waiting."""
        keys = sorted(set(keys))
        if not keys:
            return set()
        now = self.now()
        found: set[str] = set()
        with self._write() as conn:
            for chunk in _chunks(keys):
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
        """Take a waiting request out of the queue (killed or timed-out sensor). Idempotent."""
        if not state.is_terminal() or state is RequestState.ADMITTED:
            raise CapacityError(f"cannot withdraw request {key!r} into state {state.value!r}")
        with self._write() as conn:
            result = conn.execute(
                update(schema.requests)
                .where(schema.requests.c.waiting_key == key)
                .values(state=state.value, waiting_key=None, ended_at=self.now())
            )
        return bool(result.rowcount)

    def waiting_request(self, key: str) -> QueuedRequest | None:
        with self._read() as conn:
            row = conn.execute(select(schema.requests).where(schema.requests.c.waiting_key == key)).first()
        return None if row is None else _queued(row)

    def record_wait_reasons(self, records: Mapping[str, WaitRecord]) -> set[str]:
        """Store why each waiting request (by key) waits; returns the keys whose code or GPUs
        ahead changed.

        Rows are written only where the stored reason, sentence or GPUs ahead differ, so a
        queue that stands still costs one read (no write lock) per round. Keys no longer
        waiting are ignored.
        """
        keys = sorted(records)
        if not keys:
            return set()
        changed: set[str] = set()
        updates: dict[str, WaitRecord] = {}
        with self._read() as conn:
            for chunk in _chunks(keys):
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
        with self._write() as conn:
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
        with self._read() as conn:
            return [_queued(r) for r in conn.execute(query).all()]

    def abandon_stale(self) -> int:
        """Drop waiting requests nobody refreshed for many stale windows (their waiter is gone)."""
        now = self.now()
        with self._write() as conn:
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
            for chunk in _chunks(gone):
                conn.execute(
                    update(schema.requests)
                    .where(schema.requests.c.id.in_(chunk))
                    .values(state=RequestState.ABANDONED.value, waiting_key=None, ended_at=now)
                )
        return len(gone)

    # -- leases -------------------------------------------------------------------------

    def try_acquire(self, request: LeaseRequest, observed: PoolCapacity | None = None) -> Lease | None:
        """Take a lease for ``request`` if the pool and the team's quota allow it right now.

        In a pool with nodes (declared with :meth:`set_nodes`, or reported per node by the
        back end in ``observed``) the request must also be placeable: on nodes of its GPU
        model, whole on each of its ``nodes`` nodes, GPU shares packed onto GPUs with room,
        within what the ledger's leases and the back end leave free. The lease then names
        the nodes and GPU shares it holds.

        Returns the lease already held under ``request.key`` when there is one (retries),
        ``None`` when the request must wait, and raises :class:`QuotaExceededError` when it
        can never be admitted as configured (no quota, larger than the team limit or pool).
        """
        try:
            return self._try_acquire(request, observed)
        except IntegrityError as err:
            # Only possible when the same key was acquired concurrently in another pool.
            held = self.active_lease(request.key)
            if held is None:
                raise CapacityError(
                    f"ledger {self.safe_url}: acquire of {request.key!r} failed: {err}"
                ) from err
            return held

    def _try_acquire(self, request: LeaseRequest, observed: PoolCapacity | None) -> Lease | None:
        with self._write() as conn:
            pool_row = self._lock_pool(conn, request.pool)
            # Read the clock under the pool lock: lease timestamps then follow lock order.
            now = self.now()
            if pool_row is None:
                raise CapacityError(
                    f"pool {request.pool!r} is not registered in ledger {self.safe_url} "
                    f"(request {request.key!r}); register it with upsert_pool or `nuro-ml quota set-pool`"
                )
            existing = conn.execute(
                select(schema.leases).where(schema.leases.c.active_key == request.key)
            ).first()
            if existing is not None and existing.expires_at > now:
                return _with_shares(conn, [existing])[0]
            if existing is not None and existing.pool != request.pool:
                self._expire(conn, now, pool=existing.pool)

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
                        schema.leases.c.pool == request.pool,
                        schema.leases.c.state == LeaseState.ACTIVE.value,
                    )
                )
            ).all()
            if any(row.expires_at <= now for row in held):
                # Holders that stopped heartbeating give their GPUs back here.
                self._expire(conn, now, pool=request.pool)
            live = [row for row in held if row.expires_at > now]
            usage = PoolUsage.from_leases(
                pool_row.capacity * MILLI, [(row.team, _row_milli(row)) for row in live], unit=MILLI
            )
            quota_rows = conn.execute(select(schema.quotas).where(schema.quotas.c.pool == request.pool)).all()
            fit = check_fit(
                usage,
                {r.team: _milli_quota(_quota(r)) for r in quota_rows},
                pool=request.pool,
                team=request.team,
                gpus=request.gpu_milli,
            )
            if fit.fit.is_permanent():
                raise QuotaExceededError(f"{fit.reason} (ledger {self.safe_url}, request {request.key!r})")
            # Placed before the capacity verdict so a request no node can ever hold is refused
            # outright rather than left waiting.
            # Leases granted after the back end's observation cannot show in it yet.
            unseen = [
                row.lease_id
                for row in live
                if observed is not None and row.acquired_at > observed.observed_at
            ]
            admissible, placement = self._place(
                conn, request, [row.lease_id for row in live], observed, unseen
            )
            if fit.fit is not Fit.FITS or not admissible:
                return None

            # Borrowed GPUs are recorded in GPUs (a borrowed share counts as the GPU it is on).
            borrowed = -(-fit.borrowed // MILLI)
            lease_id = f"lease-{uuid.uuid4().hex}"
            expires_at = now + timedelta(seconds=request.ttl_seconds)
            values = {
                "lease_id": lease_id,
                "request_key": request.key,
                "active_key": request.key,
                "team": request.team,
                "pool": request.pool,
                "gpus": request.gpus,
                "nodes": request.nodes,
                "gpu_milli": request.gpu_milli,
                "share_milli": request.gpu_share,
                "gpu_model": request.gpu_model,
                "priority": request.priority,
                "state": LeaseState.ACTIVE.value,
                "borrowed": borrowed,
                "ttl_seconds": request.ttl_seconds,
                "acquired_at": now,
                "heartbeat_at": now,
                "expires_at": expires_at,
            }
            conn.execute(schema.leases.insert().values(**values))
            shares = (
                ()
                if placement is None
                else tuple(LeaseShare(x.node, x.gpu, x.milli) for x in placement.shares)
            )
            if shares:
                conn.execute(
                    schema.lease_shares.insert(),
                    [
                        {"lease_id": lease_id, "node": x.node, "gpu": x.gpu, "milli": x.milli, "position": i}
                        for i, x in enumerate(shares)
                    ],
                )
            admitted = conn.execute(
                update(schema.requests)
                .where(schema.requests.c.waiting_key == request.key)
                .values(
                    state=RequestState.ADMITTED.value,
                    waiting_key=None,
                    admitted_at=now,
                    ended_at=now,
                    lease_id=lease_id,
                )
            )
            if not admitted.rowcount:
                # Admitted without queueing: still recorded, with zero wait, for wait-time stats.
                conn.execute(
                    schema.requests.insert().values(
                        request_key=request.key,
                        waiting_key=None,
                        team=request.team,
                        pool=request.pool,
                        gpus=request.gpus,
                        nodes=request.nodes,
                        gpu_milli=request.gpu_milli,
                        share_milli=request.gpu_share,
                        gpu_model=request.gpu_model,
                        priority=request.priority,
                        state=RequestState.ADMITTED.value,
                        ttl_seconds=request.ttl_seconds,
                        stale_after_seconds=request.stale_after_seconds,
                        enqueued_at=now,
                        last_seen_at=now,
                        deadline=request.deadline,
                        admitted_at=now,
                        ended_at=now,
                        lease_id=lease_id,
                    )
                )
        lease = Lease(
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
        log.info(
            "Lease %s: %s GPUs of pool %s for team %s (%s borrowed)%s, key %s",
            lease.lease_id,
            gpu_amount(lease.milli, MILLI),
            lease.pool,
            lease.team,
            lease.borrowed,
            f" on {', '.join(lease.node_names)}" if shares else "",
            lease.key,
        )
        return lease

    def acquire(self, request: LeaseRequest) -> Lease:
        """Like :meth:`try_acquire`, but raises :class:`CapacityError` when the request must wait."""
        lease = self.try_acquire(request)
        if lease is None:
            raise CapacityError(
                f"pool {request.pool!r} cannot grant {gpu_amount(request.gpu_milli, MILLI)} GPUs to team "
                f"{request.team!r} now "
                f"(request {request.key!r}, ledger {self.safe_url})"
            )
        return lease

    def release(self, lease_id: str) -> Lease | None:
        """Return a lease's GPUs. Idempotent: releasing a released or expired lease changes nothing.

        Returns the lease as stored afterwards, or ``None`` when the ledger never knew it.
        """
        with self._write() as conn:
            row = conn.execute(select(schema.leases).where(schema.leases.c.lease_id == lease_id)).first()
            if row is None:
                return None
            if row.state == LeaseState.ACTIVE.value:
                self._lock_pool(conn, row.pool)
                now = self.now()
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
                    return _with_shares(conn, [released])[0]
                # Already ended meanwhile, or its holder stopped heartbeating before releasing:
                # then it ended at its expiry.
                self._expire(conn, now, pool=row.pool)
                row = conn.execute(select(schema.leases).where(schema.leases.c.lease_id == lease_id)).one()
            return _with_shares(conn, [row])[0]

    def release_key(self, key: str) -> Lease | None:
        """Release whatever a task instance holds and withdraw what it waits for (kill/teardown)."""
        self.withdraw(key)
        lease = self.active_lease(key)
        return None if lease is None else self.release(lease.lease_id)

    def heartbeat(self, lease_id: str, *, ttl_seconds: float | None = None) -> Lease:
        """Extend an active lease by its TTL (or ``ttl_seconds``) from now.

        A lease asked to give its GPUs back (reclaim) is not extended past its reclaim
        deadline; check :attr:`Lease.reclaim_requested_at` and :attr:`Lease.state`.
        """
        now = self.now()
        with self._write() as conn:
            row = conn.execute(select(schema.leases).where(schema.leases.c.lease_id == lease_id)).first()
            if row is None:
                raise CapacityError(f"lease {lease_id!r} is not in ledger {self.safe_url}")
            if row.state == LeaseState.ACTIVE.value and row.expires_at <= now:
                self._expire(conn, now, pool=row.pool)
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
            return _with_shares(conn, [row])[0]

    def request_reclaim(
        self, lease_ids: Iterable[str], *, grace_seconds: float = DEFAULT_RECLAIM_GRACE_SECONDS
    ) -> list[str]:
        """Ask borrowing leases to give their GPUs back: they expire after ``grace_seconds``."""
        now = self.now()
        deadline = now + timedelta(seconds=grace_seconds)
        marked: list[str] = []
        with self._write() as conn:
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

    def _expire(self, conn: Connection, now: datetime, *, pool: str | None = None) -> int:
        condition = and_(schema.leases.c.state == LeaseState.ACTIVE.value, schema.leases.c.expires_at <= now)
        if pool is not None:
            condition = and_(condition, schema.leases.c.pool == pool)
        result = conn.execute(
            update(schema.leases).where(condition).values(state=LeaseState.EXPIRED.value, active_key=None)
        )
        return int(result.rowcount or 0)

    def expire_leases(self) -> int:
        """Reclaim every lease whose holder stopped heartbeating; returns how many expired."""
        with self._write() as conn:
            count = self._expire(conn, self.now())
        if count:
            log.warning(
                "Ledger %s: %s lease(s) expired without a heartbeat and were reclaimed", self.safe_url, count
            )
        return count

    def lease(self, lease_id: str) -> Lease | None:
        with self._read() as conn:
            row = conn.execute(select(schema.leases).where(schema.leases.c.lease_id == lease_id)).first()
            return None if row is None else _with_shares(conn, [row])[0]

    def active_lease(self, key: str) -> Lease | None:
        """The unexpired active lease held under ``key``, if any."""
        with self._read() as conn:
            row = conn.execute(select(schema.leases).where(schema.leases.c.active_key == key)).first()
            if row is None or row.expires_at <= self.now():
                return None
            return _with_shares(conn, [row])[0]

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
        with self._read() as conn:
            return _with_shares(conn, conn.execute(query).all())

    # -- what the admission policy sees -------------------------------------------------

    def snapshot(self, observed: Mapping[str, PoolCapacity] | None = None) -> Snapshot:
        """Pools, quotas, active leases and live waiting requests for :func:`policy.decide`.

        ``observed`` (pool name -> what a back end reports) caps a pool's capacity by what
        the back end has in total and adds its free-GPU figure, so GPUs used outside the
        ledger are not handed out twice.
        """
        now = self.now()
        with self._read() as conn:
            pool_rows = conn.execute(select(schema.pools)).all()
            quota_rows = conn.execute(select(schema.quotas)).all()
            lease_rows = conn.execute(
                select(schema.leases).where(schema.leases.c.state == LeaseState.ACTIVE.value)
            ).all()
            request_rows = conn.execute(
                select(schema.requests).where(schema.requests.c.state == RequestState.WAITING.value)
            ).all()
        observed = observed or {}
        pools: dict[str, PoolView] = {}
        for row in pool_rows:
            seen = observed.get(row.name)
            capacity = row.capacity if seen is None else min(row.capacity, seen.total_gpus)
            pools[row.name] = PoolView(
                row.name, capacity * MILLI, None if seen is None else int(seen.free_gpus * MILLI)
            )
        epoch = now.timestamp()
        running = [
            Running(
                lease_id=r.lease_id,
                key=r.request_key,
                team=r.team,
                pool=r.pool,
                gpus=_row_milli(r),
                acquired_at=r.acquired_at.timestamp(),
                expires_at=r.expires_at.timestamp(),
                priority=r.priority,
                reclaim_requested=r.reclaim_requested_at is not None,
            )
            for r in lease_rows
            if r.expires_at > now
        ]
        pending = [
            Pending(
                key=r.request_key,
                team=r.team,
                pool=r.pool,
                gpus=_row_milli(r),
                enqueued_at=r.enqueued_at.timestamp(),
                nodes=r.nodes,
                priority=r.priority,
                max_runtime=r.ttl_seconds,
            )
            for r in request_rows
            if (now - r.last_seen_at).total_seconds() <= r.stale_after_seconds
            and (r.deadline is None or r.deadline > now)
        ]
        return Snapshot(
            now=epoch,
            pools=pools,
            quotas={(r.team, r.pool): _milli_quota(_quota(r)) for r in quota_rows},
            running=running,
            pending=pending,
            unit=MILLI,
        )


def _quota(row: Row[Any]) -> Quota:
    return Quota(
        team=row.team,
        pool=row.pool,
        nominal=row.nominal,
        borrowing_limit=row.borrowing_limit,
        lending_limit=row.lending_limit,
    )


def cap_by_observed(
    states: Sequence[NodeState],
    seen: Mapping[str, NodeCapacity],
    unseen: Mapping[str, Sequence[Share]] | None = None,
) -> None:
    """Lower each node's free GPUs to what the back end reports free there.

    GPUs used outside the ledger (or by work it does not know yet) are taken away, fullest
    GPUs last, so the ledger never places work where the back end has no room; a node the
    back end does not report has nothing free. ``unseen``: shares of leases granted after
    the observation, which the back end's free figure cannot reflect yet.
    """
    for state in states:
        node = seen.get(state.name)
        allowed = (
            0
            if node is None
            else (node.free_milli if node.free_milli is not None else node.free_gpus * MILLI)
        )
        allowed -= sum(share.milli for share in (unseen or {}).get(state.name, ()))
        excess = state.free_milli - allowed
        for gpu in sorted(range(len(state.gpu_free)), key=lambda i: (state.gpu_free[i], i), reverse=True):
            if excess <= 0:
                break
            taken = min(excess, state.gpu_free[gpu])
            state.gpu_free[gpu] -= taken
            excess -= taken


def _with_shares(conn: Connection, rows: Sequence[Row[Any]]) -> list[Lease]:
    """Leases of ``rows`` with the GPU shares each holds."""
    shares: dict[str, list[LeaseShare]] = {}
    ids = [r.lease_id for r in rows]
    for chunk in _chunks(ids):
        found = conn.execute(
            select(schema.lease_shares)
            .where(schema.lease_shares.c.lease_id.in_(chunk))
            .order_by(schema.lease_shares.c.lease_id, schema.lease_shares.c.position)
        ).all()
        for share in found:
            shares.setdefault(share.lease_id, []).append(LeaseShare(share.node, share.gpu, share.milli))
    return [_lease(r, tuple(shares.get(r.lease_id, ()))) for r in rows]


def _row_milli(row: Any) -> int:
    milli = getattr(row, "gpu_milli", None)
    return int(row.gpus) * MILLI if milli is None else int(milli)


def _milli_quota(quota: Quota) -> Quota:
    """A quota in milli-GPUs, as the policy counts inside the ledger."""
    return Quota(
        team=quota.team,
        pool=quota.pool,
        nominal=quota.nominal * MILLI,
        borrowing_limit=None if quota.borrowing_limit is None else quota.borrowing_limit * MILLI,
        lending_limit=None if quota.lending_limit is None else quota.lending_limit * MILLI,
    )


def _lease(row: Row[Any], shares: tuple[LeaseShare, ...] = ()) -> Lease:
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
        gpu_milli=_row_milli(row),
        shares=shares,
        gpu_model=row.gpu_model,
    )


def _queued(row: Row[Any]) -> QueuedRequest:
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
        gpu_milli=_row_milli(row),
        wait_reason=row.wait_reason,
        wait_message=row.wait_message,
        gpus_ahead=row.gpus_ahead,
    )
