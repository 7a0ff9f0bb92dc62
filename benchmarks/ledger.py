"""Ledger acquire throughput on a real PostgreSQL server with 16 concurrent clients.

Starts its own PostgreSQL 15 (initdb in a temporary directory, free loopback port, stopped
at the end), then runs 16 client processes for ``--seconds``. Each client loops: take a
1-GPU lease under its own key, release it. The pool (64 GPUs) and the team quota are large
enough that every acquire is granted, so the figure is the cost of a correct acquire under
contention, not of waiting for capacity.

* ours: :meth:`QuotaLedger.try_acquire` (pool row ``SELECT ... FOR UPDATE``, expiry sweep,
  usage and quota check, lease and request rows) and :meth:`QuotaLedger.release`;
* reference: the textbook alternative without row locks, a SERIALIZABLE transaction
  (read usage and quota, insert the lease) retried on serialization failure.

Prints::

    ledger_acquire_pg: X acquires/s at 16 clients
    ledger_acquire_pg_vs_serializable: ours X acquires/s, reference Y acquires/s, ratio Z

Run: ``python -m benchmarks.ledger [--clients N] [--seconds S]``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

CAPACITY = 64
TEAM = "perception"


@contextmanager
def postgres() -> Iterator[str]:
    """A throw-away PostgreSQL server; yields a SQLAlchemy URL of a fresh database."""
    from nuro_ml.local_cluster.postgres import temporary_server

    with temporary_server("bench", "bench", "ledger", prefix="bench-pg-") as server:
        yield server.url


def _ours(url: str, pool: str, worker: int, start_at: float, seconds: float) -> int:
    from nuro_ml.capacity.ledger import QuotaLedger
    from nuro_ml.capacity.records import LeaseRequest

    ledger = QuotaLedger(url)
    ledger.pools()  # connect before the clock starts
    time.sleep(max(0.0, start_at - time.time()))
    done = 0
    end = start_at + seconds
    while time.time() < end:
        request = LeaseRequest(key=f"w{worker}/{done}", team=TEAM, pool=pool, gpus=1)
        lease = ledger.try_acquire(request)
        if lease is None:
            raise RuntimeError(f"acquire refused with {CAPACITY} GPUs and at most 16 leases held")
        ledger.release(lease.lease_id)
        done += 1
    return done


def _reference(url: str, pool: str, worker: int, start_at: float, seconds: float) -> int:
    from datetime import UTC, datetime, timedelta

    from psycopg import errors
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import DBAPIError

    engine = create_engine(url, isolation_level="SERIALIZABLE")
    with engine.connect():
        pass
    time.sleep(max(0.0, start_at - time.time()))
    done = 0
    end = start_at + seconds
    while time.time() < end:
        lease_id = f"ref-{uuid.uuid4().hex}"
        while True:
            try:
                with engine.begin() as conn:
                    now = datetime.now(UTC)
                    used = conn.execute(
                        text(
                            "SELECT COALESCE(SUM(gpus), 0) FROM capacity_leases"
                            " WHERE pool = :p AND state = 'active'"
                        ),
                        {"p": pool},
                    ).scalar_one()
                    capacity = conn.execute(
                        text("SELECT capacity FROM capacity_pools WHERE name = :p"), {"p": pool}
                    ).scalar_one()
                    nominal = conn.execute(
                        text("SELECT nominal FROM capacity_quotas WHERE team = :t AND pool = :p"),
                        {"t": TEAM, "p": pool},
                    ).scalar_one()
                    if used + 1 > min(capacity, nominal):
                        raise RuntimeError("reference acquire refused")
                    conn.execute(
                        text(
                            "INSERT INTO capacity_leases (lease_id, request_key, active_key, team, pool,"
                            " gpus, nodes, priority, state, borrowed, ttl_seconds, acquired_at,"
                            " heartbeat_at, expires_at)"
                            " VALUES (:id, :k, :k, :t, :p, 1, 1, 0, 'active', 0, 3600, :now, :now, :exp)"
                        ),
                        {
                            "id": lease_id,
                            "k": lease_id,
                            "t": TEAM,
                            "p": pool,
                            "now": now.replace(tzinfo=None),
                            "exp": (now + timedelta(hours=1)).replace(tzinfo=None),
                        },
                    )
                break
            except DBAPIError as err:
                if not isinstance(err.orig, errors.SerializationFailure):
                    raise
        while True:
            try:
                with engine.begin() as conn:
                    conn.execute(
                        text(
                            "UPDATE capacity_leases SET state = 'released', active_key = NULL"
                            " WHERE lease_id = :id"
                        ),
                        {"id": lease_id},
                    )
                break
            except DBAPIError as err:
                if not isinstance(err.orig, errors.SerializationFailure):
                    raise
        done += 1
    engine.dispose()
    return done


def _run(kind: str, url: str, pool: str, clients: int, seconds: float) -> float:
    target = _ours if kind == "ours" else _reference
    start_at = time.time() + 5.0
    context = multiprocessing.get_context("fork")
    with context.Pool(clients) as workers:
        counts = workers.starmap(target, [(url, pool, i, start_at, seconds) for i in range(clients)])
    return sum(counts) / seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args(argv)

    from nuro_ml.capacity.engine import dispose_all
    from nuro_ml.capacity.ledger import QuotaLedger

    with postgres() as url:
        ledger = QuotaLedger(url)
        for pool in ("ours", "reference"):
            ledger.upsert_pool(pool, capacity=CAPACITY)
            ledger.upsert_quota(TEAM, pool, nominal=CAPACITY)
        dispose_all()  # no pooled connection may cross the fork
        ours = _run("ours", url, "ours", args.clients, args.seconds)
        reference = _run("reference", url, "reference", args.clients, args.seconds)
    print(f"ledger_acquire_pg: {ours:.0f} acquires/s at {args.clients} clients")
    print(
        f"ledger_acquire_pg_vs_serializable: ours {ours:.0f} acquires/s, "
        f"reference {reference:.0f} acquires/s, ratio {ours / max(reference, 1e-9):.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
