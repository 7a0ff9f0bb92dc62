"""One admission round: refresh the queue, ask the policy, take leases for the admitted.

Used by the trigger's shared poller (for every request waiting in a triggerer process) and
by the sensor's synchronous path (for its own request), so both run the same decision.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from nuro_ml.capacity.backends.base import PoolCapacity
from nuro_ml.capacity.ledger import QuotaLedger
from nuro_ml.capacity.policy import Decision, PolicyConfig, decide, get_policy
from nuro_ml.capacity.reasons import WaitReason, WaitRecord, classify
from nuro_ml.capacity.records import Lease, LeaseRequest
from nuro_ml.exceptions import QuotaExceededError

log = logging.getLogger(__name__)


@dataclass
class RoundResult:
    """Outcome for the requests a caller acts for; ``leases`` is in admission order.

    ``reasons`` holds the classified reason of each request in ``waiting`` that the round
    could classify (also stored in its ledger row).
    """

    leases: dict[str, Lease] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    waiting: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, WaitRecord] = field(default_factory=dict)
    decision: Decision | None = None


def admission_round(
    ledger: QuotaLedger,
    requests: Sequence[LeaseRequest],
    capacities: Sequence[PoolCapacity] | None = None,
    policy: PolicyConfig | str = "fair",
) -> RoundResult:
    """Run one round for ``requests`` (all already enqueued or held by their callers)."""
    config = get_policy(policy)
    by_key = {r.key: r for r in requests}
    result = RoundResult()

    still_waiting = ledger.touch(by_key)
    for key, request in by_key.items():
        if key in still_waiting:
            continue
        held = ledger.active_lease(key)
        if held is not None:
            result.leases[key] = held
        else:
            # Dropped from the queue while its waiter was away (triggerer restart): back in line.
            ledger.enqueue(request)

    ledger.expire_leases()
    ledger.abandon_stale()
    observed = {c.pool: c for c in capacities or ()}
    snapshot = ledger.snapshot(observed=observed)
    decision = decide(snapshot, config)
    result.decision = decision
    if decision.reclaim:
        ledger.request_reclaim(decision.reclaim)

    for admission in decision.admitted:
        admitted = by_key.get(admission.key)
        if admitted is None or admission.key in result.leases:
            continue
        try:
            lease = ledger.try_acquire(admitted, observed.get(admitted.pool))
        except QuotaExceededError as err:
            result.failed[admission.key] = str(err)
            continue
        if lease is None:
            # Not placeable on the pool's nodes yet, or lost a race with another triggerer or a
            # worker: retry next round.
            message = (
                "within quota, but no node has room to place it yet (or another acquire took the GPUs first)"
            )
            result.waiting[admission.key] = message
            result.reasons[admission.key] = WaitRecord(WaitReason.GANG_UNPLACEABLE, message)
        else:
            result.leases[admission.key] = lease

    for key in by_key:
        if key in result.leases or key in result.failed:
            continue
        if key in decision.impossible:
            result.failed[key] = decision.impossible[key]
        else:
            result.waiting.setdefault(key, decision.waiting.get(key, "not in the live queue yet"))

    classified = classify(snapshot, decision, config)
    for key in result.waiting:
        if key not in result.reasons and key in classified:
            result.reasons[key] = classified[key]
    ledger.record_wait_reasons(result.reasons)
    return result


def record_unreachable(
    ledger: QuotaLedger, requests: Sequence[LeaseRequest], error: BaseException | str
) -> dict[str, WaitRecord]:
    """Mark ``requests`` as waiting on a capacity back end that did not answer.

    No admission round runs without the back end's numbers (the ledger alone could
    over-admit a shrunken cluster), so each request keeps its place and this reason.
    """
    records = {
        r.key: WaitRecord(
            WaitReason.BACKEND_UNREACHABLE, f"capacity back end of pool {r.pool!r} unreachable: {error}"
        )
        for r in requests
    }
    ledger.record_wait_reasons(records)
    return records
