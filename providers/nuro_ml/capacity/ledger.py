"""The GPU quota ledger: pools, team quotas, leases and the request queue in one SQL database.

:class:`QuotaLedger` is the one entry point; its parts live next to it, one job each:

* :mod:`~nuro_ml.capacity.ledger_store`: engine, clock, transactions and migrations;
* :mod:`~nuro_ml.capacity.pools`: pools, quotas and their nodes;
* :mod:`~nuro_ml.capacity.request_queue`: waiting requests and their wait reasons;
* :mod:`~nuro_ml.capacity.leases`: the lease lifecycle, with the acquire transaction;
* :mod:`~nuro_ml.capacity.lease_placement`: placing a request on a pool's nodes;
* :mod:`~nuro_ml.capacity.snapshot`: the state the admission policy decides on.

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

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime

from sqlalchemy import Engine

from nuro_ml.capacity.backends.base import PoolCapacity
from nuro_ml.capacity.leases import DEFAULT_RECLAIM_GRACE_SECONDS, LeaseBook
from nuro_ml.capacity.ledger_store import LedgerStore
from nuro_ml.capacity.placement import Demand, NodeSpec, NodeState, get_placement_policy, typical_workload
from nuro_ml.capacity.policy import Snapshot, gpu_amount
from nuro_ml.capacity.pools import PoolRegistry
from nuro_ml.capacity.reasons import WaitRecord
from nuro_ml.capacity.records import (
    MILLI,
    Lease,
    LeaseRequest,
    LeaseState,
    Pool,
    QueuedRequest,
    Quota,
    RequestState,
    lease_key,
)
from nuro_ml.capacity.request_queue import RequestQueue
from nuro_ml.capacity.snapshot import read_snapshot
from nuro_ml.exceptions import CapacityError

__all__ = ["QuotaLedger", "lease_key"]


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
        self._store = LedgerStore(url, clock=clock)
        self._pools = PoolRegistry(self._store)
        self._queue = RequestQueue(self._store)
        self._leases = LeaseBook(self._store, placement)

    def __repr__(self) -> str:
        return f"QuotaLedger({self.safe_url!r})"

    @property
    def placement(self) -> str:
        """Name of the placement policy acquires use in pools with nodes."""
        return self._leases.placement

    @property
    def url(self) -> str:
        return self._store.url

    @property
    def safe_url(self) -> str:
        """The URL with any password masked, for logs and error messages."""
        return self._store.safe_url

    @property
    def engine(self) -> Engine:
        return self._store.engine

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def now(self) -> datetime:
        return self._store.now()

    def migrate(self) -> list[int]:
        """Create or upgrade the ledger tables; safe to call from many processes at once."""
        return self._store.migrate()

    def schema_version(self) -> int:
        return self._store.schema_version()

    # -- pools and quotas ---------------------------------------------------------------

    def upsert_pool(self, name: str, *, capacity: int, gpu_type: str | None = None) -> Pool:
        """Register a pool or change its capacity/GPU type (idempotent).

        Lowering capacity below what is leased keeps existing leases; new ones wait until
        usage falls under the new capacity.
        """
        return self._pools.upsert_pool(name, capacity=capacity, gpu_type=gpu_type)

    def upsert_quota(
        self,
        team: str,
        pool: str,
        *,
        nominal: float | str,
        borrowing_limit: float | str | None = None,
        lending_limit: float | str | None = None,
    ) -> Quota:
        """Set a team's quota in a pool (idempotent). The pool must be registered first.

        Amounts are GPUs, fractional ones included (``2.5``), or milli-GPUs (``"2500m"``).
        """
        return self._pools.upsert_quota(
            team, pool, nominal=nominal, borrowing_limit=borrowing_limit, lending_limit=lending_limit
        )

    def remove_quota(self, team: str, pool: str) -> bool:
        """Delete a team's quota in a pool; existing leases are kept. Returns whether one existed."""
        return self._pools.remove_quota(team, pool)

    def pools(self) -> list[Pool]:
        return self._pools.pools()

    def pool(self, name: str) -> Pool | None:
        return next((p for p in self.pools() if p.name == name), None)

    def quotas(self, pool: str | None = None) -> list[Quota]:
        return self._pools.quotas(pool)

    # -- nodes --------------------------------------------------------------------------

    def set_nodes(self, pool: str, nodes: Sequence[NodeSpec]) -> Pool:
        """Declare the nodes of a pool (replacing those declared before); idempotent.

        The pool's capacity becomes its nodes' GPUs. Leases already held keep their shares;
        shares on nodes no longer declared stop counting against any node.
        """
        return self._pools.set_nodes(pool, nodes)

    def nodes(self, pool: str) -> list[NodeSpec]:
        return self._pools.nodes(pool)

    def node_usage(self, pool: str) -> list[NodeState]:
        """Each node of ``pool`` with the milli-GPUs still free per GPU after active leases."""
        return self._pools.node_usage(pool)

    # -- the request queue --------------------------------------------------------------

    def enqueue(self, request: LeaseRequest) -> QueuedRequest:
        """Put a request in the queue, or refresh the one already waiting under its key.

        A retried task keeps its original place (enqueue time) while its request waits.
        """
        return self._queue.enqueue(request)

    def touch(self, keys: Iterable[str]) -> set[str]:
        """Mark waiting requests as still wanted; returns the keys that are (still) waiting."""
        return self._queue.touch(keys)

    def withdraw(self, key: str, *, state: RequestState = RequestState.WITHDRAWN) -> bool:
        """Take a waiting request out of the queue (killed or timed-out sensor). Idempotent."""
        return self._queue.withdraw(key, state=state)

    def waiting_request(self, key: str) -> QueuedRequest | None:
        return self._queue.waiting_request(key)

    def record_wait_reasons(self, records: Mapping[str, WaitRecord]) -> set[str]:
        """Store why each waiting request (by key) waits; returns the keys whose code or GPUs
        ahead changed.

        Rows are written only where the stored reason, sentence or GPUs ahead differ, so a
        queue that stands still costs one read (no write lock) per round. Keys no longer
        waiting are ignored.
        """
        return self._queue.record_wait_reasons(records)

    def requests(
        self, *, state: RequestState | None = None, pool: str | None = None, key: str | None = None
    ) -> list[QueuedRequest]:
        return self._queue.requests(state=state, pool=pool, key=key)

    def abandon_stale(self) -> int:
        """Drop waiting requests nobody refreshed for many stale windows (their waiter is gone)."""
        return self._queue.abandon_stale()

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
        return self._leases.try_acquire(request, observed)

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
        return self._leases.release(lease_id)

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
        return self._leases.heartbeat(lease_id, ttl_seconds=ttl_seconds)

    def request_reclaim(
        self, lease_ids: Iterable[str], *, grace_seconds: float = DEFAULT_RECLAIM_GRACE_SECONDS
    ) -> list[str]:
        """Ask borrowing leases to give their GPUs back: they expire after ``grace_seconds``."""
        return self._leases.request_reclaim(lease_ids, grace_seconds=grace_seconds)

    def expire_leases(self) -> int:
        """Reclaim every lease whose holder stopped heartbeating; returns how many expired."""
        return self._leases.expire_leases()

    def lease(self, lease_id: str) -> Lease | None:
        return self._leases.lease(lease_id)

    def active_lease(self, key: str) -> Lease | None:
        """The unexpired active lease held under ``key``, if any."""
        return self._leases.active_lease(key)

    def leases(
        self,
        *,
        state: LeaseState | None = None,
        pool: str | None = None,
        team: str | None = None,
        since: datetime | None = None,
    ) -> list[Lease]:
        return self._leases.leases(state=state, pool=pool, team=team, since=since)

    # -- what the admission policy sees -------------------------------------------------

    def snapshot(self, observed: Mapping[str, PoolCapacity] | None = None) -> Snapshot:
        """Pools, quotas, active leases and live waiting requests for :func:`policy.decide`.

        ``observed`` (pool name -> what a back end reports) caps a pool's capacity by what
        the back end has in total and adds its free-GPU figure, so GPUs used outside the
        ledger are not handed out twice.
        """
        return read_snapshot(self._store, observed)
