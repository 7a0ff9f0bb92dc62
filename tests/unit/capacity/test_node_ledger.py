"""Pools with nodes: leases on named nodes and GPU shares, placement-checked acquire, migration."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nuro_ml.capacity import ledger_store, schema
from nuro_ml.capacity.backends.base import NodeCapacity, PoolCapacity
from nuro_ml.capacity.engine import dispose_all
from nuro_ml.capacity.ledger import QuotaLedger
from nuro_ml.capacity.placement import NodeSpec
from nuro_ml.capacity.records import MILLI, LeaseRequest, LeaseState
from nuro_ml.exceptions import CapacityError, QuotaExceededError
from sqlalchemy import create_engine, text

from tests.unit.capacity.node_checks import (
    check_node_invariants,
    cluster_strategy,
    run_node_workers,
    setup_node_pool,
    steps_strategy,
)
from tests.unit.capacity.old_schemas import V1_QUOTAS


def ask(key: str, gpus: int, nodes: int = 1, share: int = MILLI, model: str | None = None) -> LeaseRequest:
    return LeaseRequest(
        key=key, team="perception", pool="h100", gpus=gpus, nodes=nodes, gpu_share=share, gpu_model=model
    )


@pytest.fixture
def node_ledger(ledger_url: str) -> QuotaLedger:
    ledger = QuotaLedger(ledger_url)
    ledger.upsert_pool("h100", capacity=0)
    ledger.set_nodes("h100", [NodeSpec(f"node-{i}", 8, "H100", 96000, 1 << 20) for i in range(4)])
    ledger.upsert_quota("perception", "h100", nominal=32)
    return ledger


def test_nodes_set_the_pool_capacity(node_ledger: QuotaLedger) -> None:
    assert node_ledger.pool("h100").capacity == 32
    assert [n.name for n in node_ledger.nodes("h100")] == ["node-0", "node-1", "node-2", "node-3"]
    with pytest.raises(CapacityError, match=r"nodes \['x'\] are declared more than once"):
        node_ledger.set_nodes("h100", [NodeSpec("x", 1), NodeSpec("x", 2)])


def test_gang_refused_while_free_gpus_are_scattered(node_ledger: QuotaLedger) -> None:
    fillers = [node_ledger.try_acquire(ask(f"fill-{i}", 6)) for i in range(4)]
    assert all(f is not None for f in fillers)
    assert sorted(f.node_names[0] for f in fillers) == ["node-0", "node-1", "node-2", "node-3"]
    # 8 GPUs are free in all (2 per node), yet 8 on one node cannot be placed: not admitted.
    assert node_ledger.try_acquire(ask("big", 8)) is None
    two_by_four = node_ledger.try_acquire(ask("spread", 8, nodes=4))
    assert two_by_four is not None and len(two_by_four.node_names) == 4
    node_ledger.release(two_by_four.lease_id)
    node_ledger.release(fillers[2].lease_id)
    lease = node_ledger.try_acquire(ask("big", 8))
    assert lease is not None and lease.node_names == (fillers[2].node_names[0],)
    assert sorted(lease.gpus_on(lease.node_names[0])) == list(range(8))
    with pytest.raises(QuotaExceededError, match="1 node\\(s\\) x 16 GPUs can never be placed"):
        node_ledger.try_acquire(ask("huge", 16))
    with pytest.raises(QuotaExceededError, match="of model A100 can never be placed"):
        node_ledger.try_acquire(ask("a100", 1, model="A100"))


@pytest.mark.parametrize("placement", ["best-fit", "ours"])
def test_gpu_shares_pack_onto_shared_gpus_and_count_as_shares(ledger_url: str, placement: str) -> None:
    ledger = QuotaLedger(ledger_url, placement=placement)
    ledger.upsert_pool("t4", capacity=0)
    ledger.set_nodes("t4", [NodeSpec("t4-0", 2, "T4")])
    ledger.upsert_quota("planning", "t4", nominal=1, borrowing_limit=0)

    def share(key: str, milli: int) -> LeaseRequest:
        return LeaseRequest(key=key, team="planning", pool="t4", gpus=1, gpu_share=milli)

    half = ledger.try_acquire(share("a", 500))
    quarter = ledger.try_acquire(share("b", 250))
    assert half is not None and quarter is not None
    assert (half.milli, half.gpu_count, quarter.gpu_count) == (500, 0.5, 0.25)
    # The team's quota is one GPU: 750 milli held, 250 more fit, 300 do not.
    assert ledger.try_acquire(share("c", 300)) is None
    last = ledger.try_acquire(share("d", 250))
    assert last is not None
    free = ledger.node_usage("t4")[0].gpu_free
    assert sum(free) == 1000 and all(0 <= f <= 1000 for f in free)
    if placement == "best-fit":
        # Best-fit puts a share on the fullest GPU that fits: all three on one GPU.
        assert {half.shares[0].gpu, quarter.shares[0].gpu, last.shares[0].gpu} == {0}
    with pytest.raises(CapacityError, match="a GPU share \\(500 milli-GPUs\\) is one GPU per node"):
        LeaseRequest(key="x", team="planning", pool="t4", gpus=2, gpu_share=500)


def test_lease_shares_survive_reads_and_retries(node_ledger: QuotaLedger) -> None:
    lease = node_ledger.try_acquire(ask("gang", 4, nodes=2))
    assert lease is not None
    again = node_ledger.try_acquire(ask("gang", 4, nodes=2))
    assert again.lease_id == lease.lease_id and again.shares == lease.shares
    assert node_ledger.active_lease("gang").shares == lease.shares
    assert node_ledger.lease(lease.lease_id).node_names == lease.node_names
    released = node_ledger.release(lease.lease_id)
    assert released.state is LeaseState.RELEASED and released.shares == lease.shares
    assert all(n.free_milli == 8 * MILLI for n in node_ledger.node_usage("h100"))


#: The lease and request tables as schema version 1 created them.
V1_TABLES = (
    V1_QUOTAS
    + """;
CREATE TABLE capacity_leases (
    lease_id VARCHAR(64) PRIMARY KEY, request_key VARCHAR(512) NOT NULL, active_key VARCHAR(512) UNIQUE,
    team VARCHAR(128) NOT NULL, pool VARCHAR(128) NOT NULL, gpus INTEGER NOT NULL, nodes INTEGER NOT NULL,
    priority INTEGER NOT NULL, state VARCHAR(16) NOT NULL, borrowed INTEGER NOT NULL,
    ttl_seconds FLOAT NOT NULL, acquired_at DATETIME NOT NULL, heartbeat_at DATETIME NOT NULL,
    expires_at DATETIME NOT NULL, released_at DATETIME, reclaim_requested_at DATETIME);
CREATE TABLE capacity_requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT, request_key VARCHAR(512) NOT NULL, waiting_key VARCHAR(512) UNIQUE,
    team VARCHAR(128) NOT NULL, pool VARCHAR(128) NOT NULL, gpus INTEGER NOT NULL, nodes INTEGER NOT NULL,
    priority INTEGER NOT NULL, state VARCHAR(16) NOT NULL, ttl_seconds FLOAT NOT NULL,
    stale_after_seconds FLOAT NOT NULL, enqueued_at DATETIME NOT NULL, last_seen_at DATETIME NOT NULL,
    deadline DATETIME, admitted_at DATETIME, ended_at DATETIME, lease_id VARCHAR(64))
"""
)


def test_version_1_ledger_migrates_keeping_its_leases(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'v1.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        schema.metadata.create_all(conn, tables=[schema.schema_version, schema.pools])
        for statement in V1_TABLES.split(";"):
            conn.execute(text(statement))
        conn.execute(text("INSERT INTO capacity_schema_version VALUES (1, 'v1', '2026-01-01 00:00:00')"))
        conn.execute(text("INSERT INTO capacity_pools VALUES ('local', 4, NULL, '2026-01-01 00:00:00')"))
        conn.execute(
            text("INSERT INTO capacity_quotas VALUES ('perception', 'local', 4, NULL, NULL, '2026-01-01')")
        )
        conn.execute(
            text(
                "INSERT INTO capacity_leases VALUES ('lease-old', 'k', 'k', 'perception', 'local', 3, 1, 0, "
                "'active', 0, 3600, '2099-01-01', '2099-01-01', '2099-01-02', NULL, NULL)"
            )
        )
    engine.dispose()
    dispose_all()
    ledger_store.MIGRATED.discard(url)
    ledger = QuotaLedger(url)
    assert ledger.migrate() == [2, 3, 4]
    old = ledger.lease("lease-old")
    assert old is not None and (old.gpus, old.milli, old.shares) == (3, 3000, ())
    # The old lease still counts: 1 of 4 GPUs is left.
    assert ledger.try_acquire(LeaseRequest(key="n", team="perception", pool="local", gpus=2)) is None
    assert ledger.try_acquire(LeaseRequest(key="n", team="perception", pool="local", gpus=1, gpu_share=500))


@settings(
    max_examples=15,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(cluster=cluster_strategy, plans=st.lists(steps_strategy, min_size=1, max_size=4))
def test_no_gpu_is_over_allocated_and_gangs_are_whole(ledger_url: str, cluster, plans) -> None:
    ledger = QuotaLedger(ledger_url)
    pool = setup_node_pool(ledger, cluster)
    outcome = run_node_workers(ledger_url, pool, plans)
    check_node_invariants(ledger, pool, outcome)


def observed(*free: int, total: int = 2) -> PoolCapacity:
    nodes = tuple(NodeCapacity(f"ray-{i}", total, f, None, f"id-{i}") for i, f in enumerate(free))
    return PoolCapacity("local", total * len(free), sum(free), nodes=nodes, source="test")


def test_back_end_nodes_gate_a_pool_without_declared_nodes(local_ledger: QuotaLedger) -> None:
    gang = LeaseRequest(key="gang", team="perception", pool="local", gpus=2, nodes=1)
    # Two free GPUs in all, one per node: a 2-GPU-per-node request cannot run, so it waits.
    assert local_ledger.try_acquire(gang, observed(1, 1)) is None
    lease = local_ledger.try_acquire(gang, observed(2, 1))
    assert lease is not None and lease.node_names == ("ray-0",)
    assert sorted(lease.gpus_on("ray-0")) == [0, 1]
    # Without per-node figures the pool is counted as a whole, as before.
    other = LeaseRequest(key="other", team="planning", pool="local", gpus=2)
    assert local_ledger.try_acquire(other) is not None


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    free=st.lists(st.integers(0, 4), min_size=1, max_size=4),
    shapes=st.lists(st.tuples(st.integers(1, 4), st.integers(1, 2)), min_size=1, max_size=6),
)
def test_admitted_is_always_placeable_on_reported_free_capacity(tmp_path_factory, free, shapes) -> None:
    url = f"sqlite:///{tmp_path_factory.mktemp('obs') / 'ledger.db'}"
    ledger = QuotaLedger(url)
    ledger.upsert_pool("local", capacity=4 * len(free))
    ledger.upsert_quota("perception", "local", nominal=4 * len(free))
    report = observed(*free, total=4)
    for index, (per_node, nodes) in enumerate(shapes):
        request = LeaseRequest(
            key=f"r{index}", team="perception", pool="local", gpus=per_node * nodes, nodes=nodes
        )
        try:
            ledger.try_acquire(request, report)
        except QuotaExceededError:
            continue
    held: dict[str, int] = {}
    for lease in ledger.leases(state=LeaseState.ACTIVE):
        assert len(lease.shares) == lease.gpus  # whole or nothing
        for share in lease.shares:
            held[share.node] = held.get(share.node, 0) + share.milli
    by_name = {n.name: n for n in report.nodes}
    for node, milli in held.items():
        assert milli <= by_name[node].free_gpus * MILLI


def test_capacity_page_shows_gpu_shares_and_lease_nodes(ledger_url: str) -> None:
    from nuro_ml.ui.capacity_data import overview

    ledger = QuotaLedger(ledger_url)
    ledger.upsert_pool("t4", capacity=0)
    ledger.set_nodes("t4", [NodeSpec("t4-0", 2, "T4")])
    ledger.upsert_quota("planning", "t4", nominal=2)
    ledger.try_acquire(LeaseRequest(key="a", team="planning", pool="t4", gpus=1, gpu_share=250))
    ledger.try_acquire(LeaseRequest(key="b", team="planning", pool="t4", gpus=1))
    page = overview(ledger)
    (pool,) = page.pools
    assert (pool.capacity, pool.used, pool.free) == (2, 1.25, 0.75)
    assert sorted(lease.gpus for lease in page.leases) == [0.25, 1]
    assert all(lease.nodes == ["t4-0"] for lease in page.leases)
