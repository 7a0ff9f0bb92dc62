"""The quota ledger on a real PostgreSQL server: row locks keep capacity and quotas under 16 workers."""

from __future__ import annotations

import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nuro_ml.capacity import ledger_store
from nuro_ml.capacity.engine import dispose_all
from nuro_ml.capacity.ledger import QuotaLedger
from nuro_ml.capacity.reasons import WaitReason, WaitRecord
from nuro_ml.capacity.records import LeaseRequest, LeaseState
from sqlalchemy import create_engine, text

from tests.unit.capacity.ledger_checks import check_invariants, ops_strategy, run_workers, setup_pool
from tests.unit.capacity.node_checks import (
    check_node_invariants,
    cluster_strategy,
    run_node_workers,
    setup_node_pool,
    steps_strategy,
)
from tests.unit.capacity.stubs import Clock

pytestmark = pytest.mark.integration


def test_fresh_database_is_migrated_once_by_concurrent_openers(postgres) -> None:
    url = postgres.create_database("ledger_migrate_race")
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def open_ledger() -> None:
        try:
            barrier.wait()
            QuotaLedger(url).migrate()
        except BaseException as err:
            errors.append(err)

    dispose_all()
    threads = [threading.Thread(target=open_ledger) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    engine = create_engine(url)
    with engine.connect() as conn:
        versions = conn.execute(text("SELECT version FROM capacity_schema_version")).scalars().all()
    engine.dispose()
    assert versions == [1, 2, 3, 4]


def test_lease_lifecycle_on_postgres(pg_ledger_url: str) -> None:
    clock = Clock()
    ledger = QuotaLedger(pg_ledger_url, clock=clock)
    ledger.upsert_pool("pg-local", capacity=4)
    ledger.upsert_pool("pg-local", capacity=4)
    ledger.upsert_quota("perception", "pg-local", nominal=4)
    request = LeaseRequest(key="dag/run/task/-1", team="perception", pool="pg-local", gpus=3, ttl_seconds=60)
    lease = ledger.try_acquire(request)
    assert ledger.try_acquire(request).lease_id == lease.lease_id
    assert ledger.try_acquire(LeaseRequest(key="other", team="perception", pool="pg-local", gpus=2)) is None
    clock.advance(61)
    other = ledger.try_acquire(LeaseRequest(key="other", team="perception", pool="pg-local", gpus=2))
    assert other is not None
    assert ledger.lease(lease.lease_id).state is LeaseState.EXPIRED
    assert ledger.release(other.lease_id).state is LeaseState.RELEASED
    assert ledger.release(other.lease_id).released_at == ledger.lease(other.lease_id).released_at
    assert ledger.heartbeat(other.lease_id).state is LeaseState.RELEASED


@settings(
    max_examples=4,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    plans=st.lists(ops_strategy, min_size=16, max_size=16),
    capacity=st.integers(2, 8),
    nominals=st.tuples(st.integers(0, 4), st.integers(0, 4), st.integers(0, 4)),
    borrowing=st.one_of(st.none(), st.integers(0, 3)),
)
def test_concurrent_acquire_release_keeps_invariants_on_postgres(
    pg_ledger_url, plans, capacity, nominals, borrowing
):
    ledger = QuotaLedger(pg_ledger_url)
    pool = setup_pool(ledger, capacity, nominals, borrowing)
    outcome = run_workers(pg_ledger_url, pool, plans)
    check_invariants(ledger, pool, capacity, nominals, borrowing, outcome)


@settings(
    max_examples=3,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(cluster=cluster_strategy, plans=st.lists(steps_strategy, min_size=16, max_size=16))
def test_sixteen_clients_never_over_allocate_a_node_on_postgres(pg_ledger_url, cluster, plans):
    ledger = QuotaLedger(pg_ledger_url)
    pool = setup_node_pool(ledger, cluster)
    outcome = run_node_workers(pg_ledger_url, pool, plans)
    check_node_invariants(ledger, pool, outcome)


def test_version_2_ledger_gains_the_wait_reason_columns(postgres) -> None:
    url = postgres.create_database("ledger_migrate_v3")
    dispose_all()
    ledger = QuotaLedger(url)
    ledger.upsert_pool("pg-local", capacity=4)
    ledger.upsert_quota("perception", "pg-local", nominal=4)
    request = LeaseRequest(key="dag/run/task/-1", team="perception", pool="pg-local", gpus=2)
    ledger.enqueue(request)
    # Back to version 2, as a ledger written by an earlier release.
    engine = create_engine(url)
    with engine.begin() as conn:
        for column in ("wait_reason", "wait_message", "gpus_ahead"):
            conn.execute(text(f"ALTER TABLE capacity_requests DROP COLUMN {column}"))
        _drop_milli_quota_columns(conn)
        conn.execute(text("DELETE FROM capacity_schema_version WHERE version >= 3"))
    engine.dispose()
    ledger = _reopened(url)
    assert ledger.migrate() == [3, 4]
    assert ledger.waiting_request(request.key).wait_reason is None
    ledger.record_wait_reasons({request.key: WaitRecord(WaitReason.POOL_SHORT, "pool is short", 2)})
    stored = ledger.waiting_request(request.key)
    assert (stored.wait_reason, stored.wait_message, stored.gpus_ahead) == ("pool_short", "pool is short", 2)


def _reopened(url: str) -> QuotaLedger:
    """The ledger as a new process opens it: fresh engines, migrations not yet checked."""
    dispose_all()
    ledger_store.MIGRATED.discard(url)
    return QuotaLedger(url)


def _drop_milli_quota_columns(conn) -> None:
    for column in ("nominal_milli", "borrowing_limit_milli", "lending_limit_milli", "milli_updated_at"):
        conn.execute(text(f"ALTER TABLE capacity_quotas DROP COLUMN {column}"))


def test_version_3_ledger_gains_fractional_quotas(postgres) -> None:
    url = postgres.create_database("ledger_migrate_v4")
    dispose_all()
    ledger = QuotaLedger(url)
    ledger.upsert_pool("pg-local", capacity=4)
    ledger.upsert_quota("perception", "pg-local", nominal=3, borrowing_limit=1)
    # Back to version 3: quotas in whole GPUs only.
    engine = create_engine(url)
    with engine.begin() as conn:
        _drop_milli_quota_columns(conn)
        conn.execute(text("DELETE FROM capacity_schema_version WHERE version = 4"))
    engine.dispose()
    ledger = _reopened(url)
    assert ledger.migrate() == [4]
    quota = ledger.quotas("pg-local")[0]
    assert (quota.nominal, quota.borrowing_limit) == (3, 1) and isinstance(quota.nominal, int)
    ledger.upsert_quota("perception", "pg-local", nominal="2500m", borrowing_limit=0)
    assert ledger.quotas("pg-local")[0].nominal == 2.5
    request = LeaseRequest(key="dag/run/task/-1", team="perception", pool="pg-local", gpus=2)
    assert ledger.try_acquire(request) is not None
    share = LeaseRequest(key="dag/run/share/-1", team="perception", pool="pg-local", gpus=1, gpu_share=500)
    assert ledger.try_acquire(share) is not None
    more = LeaseRequest(key="dag/run/more/-1", team="perception", pool="pg-local", gpus=1, gpu_share=100)
    assert ledger.try_acquire(more) is None
