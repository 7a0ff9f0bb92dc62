"""Placing a lease request on the free GPUs of its pool's nodes, inside the acquire.

A pool with declared nodes (or nodes a back end reports) admits a request only where the
placement policy finds room for all its workers on what the ledger's leases and the back
end leave free. The policy is given the pool's recent request shapes: the workload FGD
measures fragmentation against.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import Connection, select

from nuro_ml.capacity import schema
from nuro_ml.capacity.backends.base import NodeCapacity, PoolCapacity
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
from nuro_ml.capacity.policy import gpu_amount
from nuro_ml.capacity.pools import held_shares, pool_nodes
from nuro_ml.capacity.records import MILLI, LeaseRequest
from nuro_ml.exceptions import QuotaExceededError

#: Recent requests of a pool whose shapes make the workload FGD measures fragmentation by.
WORKLOAD_WINDOW = 500


def place_request(
    conn: Connection,
    request: LeaseRequest,
    live: Sequence[str],
    *,
    policy_name: str,
    ledger: str,
    observed: PoolCapacity | None = None,
    unseen: Sequence[str] = (),
) -> tuple[bool, Placement | None]:
    """Place ``request`` on the pool's free node capacity (under the pool lock).

    ``live``: ids of the pool's active leases; ``unseen``: those granted after ``observed``
    was taken. Returns (admissible, placement): placement ``None`` with True when the pool
    has no nodes (it is counted as a whole); (False, None) when the request must wait.
    Raises when no node of the pool could ever hold it (``ledger`` names the ledger then).
    """
    specs = pool_nodes(conn, request.pool)
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
    policy = get_placement_policy(policy_name, pool_workload(conn, request.pool, demand))
    states = node_states(specs, held_shares(conn, live))
    if seen:
        cap_by_observed(states, seen, held_shares(conn, unseen))
    placement = place(states, demand, policy)
    if placement is not None:
        return True, placement
    if place([NodeState.empty(s) for s in specs], demand, policy) is None:
        per_node = gpu_amount(demand.worker_milli, MILLI)
        model = f" of model {request.gpu_model}" if request.gpu_model else ""
        raise QuotaExceededError(
            f"request {request.key!r} for {request.nodes} node(s) x {per_node} GPUs{model} can never "
            f"be placed on the nodes of pool {request.pool!r} (ledger {ledger})"
        )
    return False, None


def pool_workload(conn: Connection, pool: str, demand: Demand) -> tuple[TypicalTask, ...]:
    """The pool's recent request shapes (and ``demand``): the workload FGD measures against."""
    rows = conn.execute(
        select(
            schema.requests.c.gpus,
            schema.requests.c.nodes,
            schema.requests.c.share_milli,
            schema.requests.c.gpu_model,
        )
        .where(schema.requests.c.pool == pool)
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
