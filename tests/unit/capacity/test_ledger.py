from __future__ import annotations

import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nuro_ml.capacity import schema
from nuro_ml.capacity.ledger import QuotaLedger
from nuro_ml.capacity.records import LeaseRequest, LeaseState, RequestState, lease_key
from nuro_ml.exceptions import CapacityError, QuotaExceededError
from nuro_ml.task_key import TaskKey

from tests.unit.capacity.ledger_checks import check_invariants, ops_strategy, run_workers, setup_pool
from tests.unit.capacity.stubs import Clock


@pytest.fixture
def ledger(tmp_path: Path, clock: Clock) -> QuotaLedger:
    ledger = QuotaLedger(f"sqlite:///{tmp_path / 'ledger.db'}", clock=clock)
    ledger.upsert_pool("local", capacity=4, gpu_type="A100")
    ledger.upsert_quota("perception", "local", nominal=2)
    ledger.upsert_quota("planning", "local", nominal=2, borrowing_limit=0)
    return ledger


def request(key: str, team: str = "perception", gpus: int = 1, **kw) -> LeaseRequest:
    return LeaseRequest(key=key, team=team, pool="local", gpus=gpus, **kw)


def test_upserts_are_idempotent_and_update_in_place(ledger: QuotaLedger):
    ledger.upsert_pool("local", capacity=4, gpu_type="A100")
    ledger.upsert_quota("perception", "local", nominal=2)
    assert [(p.name, p.capacity, p.gpu_type) for p in ledger.pools()] == [("local", 4, "A100")]
    ledger.upsert_pool("local", capacity=8, gpu_type="A100")
    ledger.upsert_quota("perception", "local", nominal=6, lending_limit=3)
    assert ledger.pool("local").capacity == 8
    assert [(q.team, q.nominal, q.lending_limit) for q in ledger.quotas("local")] == [
        ("perception", 6, 3),
        ("planning", 2, None),
    ]


def test_quota_needs_a_registered_pool(ledger: QuotaLedger):
    with pytest.raises(CapacityError, match="pool 'h100' is not registered"):
        ledger.upsert_quota("perception", "h100", nominal=1)
    with pytest.raises(CapacityError, match="lending_limit must be between 0 and nominal"):
        ledger.upsert_quota("perception", "local", nominal=1, lending_limit=2)
    assert ledger.quotas("local")[0].nominal == 2


def test_schema_is_versioned_and_migrates_once(ledger: QuotaLedger):
    assert ledger.schema_version() == schema.LATEST_VERSION == 4
    assert QuotaLedger(ledger.url).migrate() == []


def test_acquire_never_exceeds_capacity_or_quota(ledger: QuotaLedger):
    first = ledger.try_acquire(request("a", gpus=3))
    assert first is not None and first.borrowed == 1
    assert ledger.try_acquire(request("b", team="planning", gpus=2)) is None
    assert ledger.try_acquire(request("c", team="planning", gpus=1)) is not None
    assert ledger.try_acquire(request("d", gpus=1)) is None
    with pytest.raises(QuotaExceededError, match="limit 2"):
        ledger.try_acquire(request("e", team="planning", gpus=3))
    with pytest.raises(QuotaExceededError, match="no quota"):
        ledger.try_acquire(request("f", team="mapping"))
    assert sum(lease.gpus for lease in ledger.leases(state=LeaseState.ACTIVE)) == 4


def test_retried_task_gets_its_own_lease_back(ledger: QuotaLedger):
    key = lease_key(TaskKey("train", "manual__1", "wait_for_gpus", -1))
    lease = ledger.try_acquire(request(key, gpus=2))
    again = ledger.try_acquire(request(key, gpus=2))
    assert again is not None and again.lease_id == lease.lease_id
    assert len(ledger.leases()) == 1
    assert ledger.active_lease(key).lease_id == lease.lease_id


def test_release_is_idempotent_and_frees_gpus(ledger: QuotaLedger, clock: Clock):
    lease = ledger.try_acquire(request("a", gpus=4))
    clock.advance(1800)
    released = ledger.release(lease.lease_id)
    assert released.state is LeaseState.RELEASED
    assert released.gpu_hours(clock()) == pytest.approx(2.0)
    clock.advance(60)
    assert ledger.release(lease.lease_id).released_at == released.released_at
    assert ledger.release("lease-unknown") is None
    assert ledger.try_acquire(request("b", gpus=4)) is not None


def test_leases_expire_without_heartbeat_and_are_reclaimed(ledger: QuotaLedger, clock: Clock):
    lease = ledger.try_acquire(request("a", gpus=4, ttl_seconds=60))
    clock.advance(45)
    assert ledger.heartbeat(lease.lease_id).expires_at == clock() + timedelta(seconds=60)
    clock.advance(45)
    assert ledger.try_acquire(request("b")) is None  # still alive thanks to the heartbeat
    clock.advance(20)
    taken = ledger.try_acquire(request("b", gpus=2))
    assert taken is not None
    expired = ledger.lease(lease.lease_id)
    assert expired.state is LeaseState.EXPIRED
    assert ledger.heartbeat(lease.lease_id).state is LeaseState.EXPIRED
    # The same task retrying after its lease expired gets a fresh one.
    again = ledger.try_acquire(request("a", gpus=2, ttl_seconds=60))
    assert again is not None and again.lease_id != lease.lease_id


def test_reclaim_shortens_a_borrowing_lease(ledger: QuotaLedger, clock: Clock):
    lease = ledger.try_acquire(request("a", gpus=3))
    assert ledger.request_reclaim([lease.lease_id], grace_seconds=120) == [lease.lease_id]
    assert ledger.request_reclaim([lease.lease_id], grace_seconds=120) == []
    assert ledger.heartbeat(lease.lease_id).expires_at == clock() + timedelta(seconds=120)
    clock.advance(121)
    assert ledger.expire_leases() == 1


def test_queue_keeps_place_on_retry_and_withdraws(ledger: QuotaLedger, clock: Clock):
    first = ledger.enqueue(request("k", gpus=2, poll_interval=10))
    clock.advance(30)
    again = ledger.enqueue(request("k", gpus=2, poll_interval=10))
    assert again.id == first.id and again.enqueued_at == first.enqueued_at
    assert [p.key for p in ledger.snapshot().pending] == ["k"]
    assert ledger.withdraw("k")
    assert not ledger.withdraw("k")
    assert ledger.snapshot().pending == []
    assert ledger.requests(key="k")[0].state is RequestState.WITHDRAWN


def test_stale_requests_leave_the_queue(ledger: QuotaLedger, clock: Clock):
    ledger.enqueue(request("k", poll_interval=10))  # stale after max(3 * 10, 60) = 60 s
    clock.advance(61)
    assert ledger.snapshot().pending == []
    assert ledger.touch(["k"]) == {"k"}
    assert [p.key for p in ledger.snapshot().pending] == ["k"]
    clock.advance(601)
    assert ledger.abandon_stale() == 1
    assert ledger.requests(key="k")[0].state is RequestState.ABANDONED


def test_admission_closes_the_request_with_its_wait(ledger: QuotaLedger, clock: Clock):
    ledger.enqueue(request("k"))
    clock.advance(90)
    lease = ledger.try_acquire(request("k"))
    stored = ledger.requests(key="k")[0]
    assert stored.state is RequestState.ADMITTED and stored.lease_id == lease.lease_id
    assert stored.wait_seconds(clock()) == 90


def test_unsupported_database_is_refused():
    with pytest.raises(CapacityError, match="supports sqlite, postgresql"):
        QuotaLedger("mysql://u:secret@db/ledger").pools()


@settings(max_examples=4, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    plans=st.lists(ops_strategy, min_size=16, max_size=16),
    capacity=st.integers(2, 8),
    nominals=st.tuples(st.integers(0, 4), st.integers(0, 4), st.integers(0, 4)),
    borrowing=st.one_of(st.none(), st.integers(0, 3)),
)
def test_concurrent_acquire_release_keeps_invariants_on_sqlite(plans, capacity, nominals, borrowing):
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{directory}/ledger.db"
        ledger = QuotaLedger(url)
        pool = setup_pool(ledger, capacity, nominals, borrowing)
        outcome = run_workers(url, pool, plans)
        check_invariants(ledger, pool, capacity, nominals, borrowing, outcome)
