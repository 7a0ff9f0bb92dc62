"""Node-aware acquire/release workloads and the placement invariants they must keep."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from hypothesis import strategies as st
from nuro_ml.capacity.ledger import QuotaLedger
from nuro_ml.capacity.placement import NodeSpec
from nuro_ml.capacity.records import MILLI, Lease, LeaseRequest, LeaseState
from nuro_ml.exceptions import QuotaExceededError

#: A request shape: (GPU share in milli, GPUs per node, nodes, GPU model or None).
Shape = tuple[int, int, int, str | None]
#: One step of a worker: a shape and whether it releases its lease afterwards.
Step = tuple[Shape, bool]

shape_strategy = st.one_of(
    st.tuples(st.sampled_from([100, 250, 500, 800]), st.just(1), st.integers(1, 2), st.none()),
    st.tuples(st.just(MILLI), st.integers(1, 4), st.integers(1, 3), st.sampled_from([None, "A100", "T4"])),
)
steps_strategy = st.lists(st.tuples(shape_strategy, st.booleans()), min_size=1, max_size=5)
cluster_strategy = st.lists(
    st.tuples(st.sampled_from([1, 2, 4, 8]), st.sampled_from(["A100", "T4"])), min_size=1, max_size=5
)


def setup_node_pool(
    ledger: QuotaLedger, cluster: Sequence[tuple[int, str]], nominal: int | None = None
) -> str:
    pool = f"nodes-{uuid.uuid4().hex[:10]}"
    ledger.upsert_pool(pool, capacity=0)
    ledger.set_nodes(pool, [NodeSpec(f"n{i}", gpus, model) for i, (gpus, model) in enumerate(cluster)])
    total = sum(g for g, _m in cluster)
    ledger.upsert_quota("team", pool, nominal=total if nominal is None else nominal)
    return pool


def request_for(pool: str, key: str, shape: Shape) -> LeaseRequest:
    share, per_node, nodes, model = shape
    return LeaseRequest(
        key=key, team="team", pool=pool, gpus=per_node * nodes, nodes=nodes, gpu_share=share, gpu_model=model
    )


@dataclass
class NodeOutcome:
    granted: list[tuple[LeaseRequest, Lease]] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def run_node_workers(url: str, pool: str, plans: Sequence[Sequence[Step]]) -> NodeOutcome:
    """Each plan in its own thread and ledger object, all started together."""
    outcome = NodeOutcome()
    barrier = threading.Barrier(len(plans))

    def work(worker: int, plan: Sequence[Step]) -> None:
        ledger = QuotaLedger(url)
        try:
            barrier.wait()
            for index, (shape, release) in enumerate(plan):
                request = request_for(pool, f"{pool}/w{worker}/s{index}", shape)
                try:
                    lease = ledger.try_acquire(request)
                except QuotaExceededError:
                    continue  # can never be placed on this cluster: refused outright
                if lease is None:
                    continue
                with outcome.lock:
                    outcome.granted.append((request, lease))
                if release:
                    ledger.release(lease.lease_id)
        except BaseException as err:
            with outcome.lock:
                outcome.errors.append(err)

    threads = [threading.Thread(target=work, args=(i, plan)) for i, plan in enumerate(plans)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcome


def check_node_invariants(ledger: QuotaLedger, pool: str, outcome: NodeOutcome) -> None:
    """No GPU over-allocated; gangs whole on distinct nodes of the right model; usage consistent."""
    assert outcome.errors == []
    specs = {n.name: n for n in ledger.nodes(pool)}
    for request, lease in outcome.granted:
        # Whole or nothing: one share per GPU asked, on exactly ``nodes`` distinct nodes.
        assert len(lease.shares) == request.gpus
        assert len(lease.node_names) == request.nodes
        assert lease.milli == request.gpu_milli == sum(s.milli for s in lease.shares)
        for share in lease.shares:
            node = specs[share.node]
            assert 0 <= share.gpu < node.gpus
            assert share.milli == request.gpu_share
            if request.gpu_model:
                assert node.gpu_model == request.gpu_model
        for node_name in lease.node_names:
            gpus = lease.gpus_on(node_name)
            assert len(gpus) == len(set(gpus)) == request.gpus // request.nodes
    # At every moment the active leases fit: check the final state, and every lease's own
    # grant was made under the pool lock against the then-active shares (replayed here).
    per_gpu: dict[tuple[str, int], int] = {}
    for lease in ledger.leases(state=LeaseState.ACTIVE, pool=pool):
        for share in lease.shares:
            per_gpu[(share.node, share.gpu)] = per_gpu.get((share.node, share.gpu), 0) + share.milli
    assert all(milli <= MILLI for milli in per_gpu.values()), per_gpu
    states = {n.name: n for n in ledger.node_usage(pool)}
    for (node, gpu), milli in per_gpu.items():
        assert states[node].gpu_free[gpu] == MILLI - milli
    _check_history(ledger, pool)


def _check_history(ledger: QuotaLedger, pool: str) -> None:
    """Replay grants and releases in time order: no GPU ever held more than 1000 milli."""
    events: list[tuple[object, int, Lease]] = []
    for lease in ledger.leases(pool=pool):
        events.append((lease.acquired_at, 1, lease))
        if lease.released_at is not None:
            events.append((lease.released_at, 0, lease))
    held: dict[tuple[str, int], int] = {}
    for _when, kind, lease in sorted(events, key=lambda e: (e[0], e[1])):
        for share in lease.shares:
            key = (share.node, share.gpu)
            held[key] = held.get(key, 0) + (share.milli if kind else -share.milli)
            assert held[key] <= MILLI, (key, held[key])
