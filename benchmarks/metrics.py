"""Scrape time of ``/nuro-ml/metrics`` on a busy ledger.

Input layout: a SQLite ledger file with 4 pools (64 GPUs each), 4 teams with a quota in
every pool, 1,000 waiting requests (1-8 GPUs, spread over pools, teams and priorities),
200 active leases and 10,000 released leases (with their admitted request rows, so the
wait histogram has 10,200 observations).

* ours: ``GET /nuro-ml/metrics`` through the plugin's FastAPI app (bearer-token auth, the
  scrape-time collector, OpenMetrics text), median of 15 scrapes after one warm-up;
* reference: the same figures the straightforward way, from the ledger's Python read API
  (every lease and admitted request loaded, GPU-hours by :func:`cost.gpu_hours_by_team`,
  the histogram counted in Python; same queue decision), without HTTP or text output.
  There is no upstream Prometheus exporter for this ledger to compare with, so the
  reference is this in-repository alternative.

The waiting rows above carry no stored reason yet (the scrape replays the policy for them). Then
the same ledger after one admission round over the queue, as the sensors' rounds run: what fits
is admitted (a few more active leases) and every request left waiting has its reason stored,
the layout a running deployment scrapes.

Prints::

    metrics_scrape: ours X ms
    metrics_scrape_vs_python_aggregation: ours X ms, reference Y ms, ratio Z
    metrics_scrape_classified: ours X ms, reference Y ms, ratio Z

Run: ``python -m benchmarks.metrics``. Target: ``metrics_scrape`` under 100 ms.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

POOLS = ("a100", "h100", "l4", "t4")
TEAMS = ("perception", "planning", "mapping", "simulation")
WAITING, ACTIVE, RELEASED = 1_000, 200, 10_000
SCRAPES = 15
TOKEN = "bench-token"


def populate(url: str) -> None:
    from nuro_ml.capacity import schema
    from nuro_ml.capacity.ledger import QuotaLedger

    ledger = QuotaLedger(url)
    for pool in POOLS:
        ledger.upsert_pool(pool, capacity=64, gpu_type=pool.upper())
        for team in TEAMS:
            ledger.upsert_quota(team, pool, nominal=16)
    now = datetime.now(UTC)
    leases: list[dict[str, Any]] = []
    requests: list[dict[str, Any]] = []
    for i in range(RELEASED + ACTIVE):
        active = i >= RELEASED
        team, pool = TEAMS[i % 4], POOLS[(i // 4) % 4]
        acquired = now - timedelta(hours=1) if active else now - timedelta(days=30) + timedelta(minutes=4 * i)
        key = f"dag_{i % 50}/scheduled__{i}/gate/-1"
        lease_id = uuid.uuid4().hex
        leases.append(
            {
                "lease_id": lease_id,
                "request_key": key,
                "active_key": key if active else None,
                "team": team,
                "pool": pool,
                "gpus": 1,
                "nodes": 1,
                "priority": 0,
                "state": "active" if active else "released",
                "borrowed": 0,
                "ttl_seconds": 43200.0,
                "acquired_at": acquired,
                "heartbeat_at": acquired,
                "expires_at": acquired + timedelta(hours=12),
                "released_at": None if active else acquired + timedelta(hours=2),
                "reclaim_requested_at": None,
            }
        )
        requests.append(
            _request(
                key, team, pool, 1, acquired - timedelta(seconds=i % 3600), "admitted", acquired, lease_id
            )
        )
    for i in range(WAITING):
        key = f"wait_{i % 40}/manual__{i}/gate/-1"
        requests.append(
            _request(
                key,
                TEAMS[i % 4],
                POOLS[(i // 4) % 4],
                1 + i % 8,
                now - timedelta(seconds=i),
                "waiting",
                None,
                None,
                i % 3,
            )
        )
    with ledger.engine.begin() as conn:
        conn.execute(schema.leases.insert(), leases)
        conn.execute(schema.requests.insert(), requests)


def _request(
    key: str,
    team: str,
    pool: str,
    gpus: int,
    enqueued: datetime,
    state: str,
    admitted: datetime | None,
    lease_id: str | None,
    priority: int = 0,
) -> dict[str, Any]:
    return {
        "request_key": key,
        "waiting_key": key if state == "waiting" else None,
        "team": team,
        "pool": pool,
        "gpus": gpus,
        "nodes": 1,
        "priority": priority,
        "state": state,
        "ttl_seconds": 43200.0,
        # Long stale window: the waiting requests stay live for the whole run.
        "stale_after_seconds": 86400.0,
        "enqueued_at": enqueued,
        "last_seen_at": datetime.now(UTC),
        "deadline": None,
        "admitted_at": admitted,
        "ended_at": admitted,
        "lease_id": lease_id,
    }


def reference_scrape() -> dict[str, Any]:
    """The same figures from the ledger's Python read API, aggregated in Python."""
    from nuro_ml.capacity.cost import gpu_hours_by_team
    from nuro_ml.capacity.ledger import QuotaLedger
    from nuro_ml.capacity.policy import decide
    from nuro_ml.capacity.reasons import classify
    from nuro_ml.capacity.records import RequestState
    from nuro_ml.metrics.catalogue import WAIT_BUCKETS

    ledger = QuotaLedger()
    snapshot = ledger.snapshot()
    records = classify(snapshot, decide(snapshot), "fair")
    now = ledger.now()
    hours = gpu_hours_by_team(ledger.leases(), datetime(1970, 1, 1, tzinfo=UTC), now)
    histogram: dict[tuple[str, str], list[int]] = {}
    for request in ledger.requests(state=RequestState.ADMITTED):
        assert request.admitted_at is not None
        wait = (request.admitted_at - request.enqueued_at).total_seconds()
        counts = histogram.setdefault((request.team, request.pool), [0] * (len(WAIT_BUCKETS) + 1))
        for i, bound in enumerate(WAIT_BUCKETS):
            counts[i] += wait <= bound
        counts[-1] += 1
    return {"reasons": len(records), "hours": hours, "histogram": histogram, "pools": ledger.pools()}


def median_ms(fn: Callable[[], object]) -> float:
    fn()
    times = []
    for _ in range(SCRAPES):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'ledger.db'}"
        os.environ["NURO_ML_LEDGER_URL"] = url
        os.environ["AIRFLOW_CONN_NURO_ML_METRICS"] = json.dumps({"conn_type": "generic", "password": TOKEN})
        populate(url)

        from fastapi.testclient import TestClient
        from nuro_ml.ui.app import create_app

        client = TestClient(create_app())
        headers = {"Authorization": f"Bearer {TOKEN}"}

        def scrape() -> None:
            response = client.get("/metrics", headers=headers)
            assert response.status_code == 200, response.text
            assert "nuro_ml_ledger_up 1.0" in response.text

        text = client.get("/metrics", headers=headers).text
        pending = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("nuro_ml_capacity_pending_requests{")
        )
        assert pending == WAITING, pending
        ours = median_ms(scrape)
        reference = median_ms(reference_scrape)
        active, waiting = classify_waiting(url)
        ours_classified = median_ms(scrape)
        reference_classified = median_ms(reference_scrape)
    print(
        f"# input: SQLite ledger, {len(POOLS)} pools x {len(TEAMS)} teams, {WAITING} waiting requests, "
        f"{ACTIVE} active and {RELEASED} released leases; median of {SCRAPES} scrapes"
    )
    print(f"metrics_scrape: ours {ours:.1f} ms")
    print(
        f"metrics_scrape_vs_python_aggregation: ours {ours:.1f} ms, reference {reference:.1f} ms, "
        f"ratio {reference / ours:.2f}"
    )
    print(
        f"# after one admission round over the queue: {active} active leases, {waiting} waiting requests, "
        "each with its stored reason"
    )
    print(
        f"metrics_scrape_classified: ours {ours_classified:.1f} ms, reference {reference_classified:.1f} ms, "
        f"ratio {reference_classified / ours_classified:.2f}"
    )
    return 0


def classify_waiting(url: str) -> tuple[int, int]:
    """One admission round over the whole queue, as the sensors' rounds run: it admits what fits
    (leases taken) and stores the reason of every request left waiting. Returns (active, waiting)."""
    from nuro_ml.capacity.admission import admission_round
    from nuro_ml.capacity.ledger import QuotaLedger
    from nuro_ml.capacity.records import LeaseRequest, RequestState

    ledger = QuotaLedger(url)
    waiting = [
        LeaseRequest(key=r.key, team=r.team, pool=r.pool, gpus=r.gpus, priority=r.priority)
        for r in ledger.requests(state=RequestState.WAITING)
    ]
    result = admission_round(ledger, waiting)
    return ACTIVE + len(result.leases), len(waiting) - len(result.leases)


if __name__ == "__main__":
    sys.exit(main())
