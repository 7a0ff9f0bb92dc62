"""A ledger queue in which requests wait for different reasons, after real admission rounds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from nuro_ml.capacity.admission import admission_round
from nuro_ml.capacity.ledger import QuotaLedger
from nuro_ml.capacity.records import LeaseRequest

#: Key -> the reason code the admission round must store for it.
EXPECTED = {
    "perception_train/run_1/gate/-1": "quota_limit",
    "planning_train/run_2/gate/-1": "behind_requests",
    "mapping_train/run_1/gate/-1": "pool_short",
}
#: Admitted in the same round, ahead of the planning request that then waits behind it.
ADMITTED = "planning_train/run_1/gate/-1"


def build_reason_queue(url: str) -> QuotaLedger:
    """Pool ``a100`` (8 GPUs) with perception at its limit and planning ahead of itself;
    pool ``h100`` (4 GPUs) too short for mapping's request.

    One admission round for all waiting requests admits planning's priority request and
    leaves the others waiting: over quota, behind 4 GPUs, pool short.
    """
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    earlier = QuotaLedger(url, clock=lambda: start)
    earlier.upsert_pool("a100", capacity=8, gpu_type="A100")
    earlier.upsert_pool("h100", capacity=4, gpu_type="H100")
    earlier.upsert_quota("perception", "a100", nominal=4, borrowing_limit=0)
    earlier.upsert_quota("planning", "a100", nominal=4)
    earlier.upsert_quota("mapping", "h100", nominal=2)
    earlier.upsert_quota("prediction", "h100", nominal=2)
    earlier.acquire(LeaseRequest(key="perception/run_0/gate/-1", team="perception", pool="a100", gpus=4))
    earlier.acquire(LeaseRequest(key="prediction/run_0/gate/-1", team="prediction", pool="h100", gpus=2))
    requests = [
        LeaseRequest(key="perception_train/run_1/gate/-1", team="perception", pool="a100", gpus=2),
        LeaseRequest(key=ADMITTED, team="planning", pool="a100", gpus=4, priority=5),
        LeaseRequest(key="planning_train/run_2/gate/-1", team="planning", pool="a100", gpus=2),
        LeaseRequest(key="mapping_train/run_1/gate/-1", team="mapping", pool="h100", gpus=3),
    ]
    for request in requests:
        earlier.enqueue(request)
    ledger = QuotaLedger(url)
    admission_round(ledger, requests)
    return ledger
