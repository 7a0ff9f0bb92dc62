"""The demo's summary shows the GPU lease as the ledger holds it at the end of the run."""

from __future__ import annotations

from pathlib import Path

from nuro_ml.capacity.ledger import QuotaLedger
from nuro_ml.capacity.records import Lease, LeaseRequest
from nuro_ml.demo import final_lease, format_summary

from tests.unit.capacity.stubs import Clock


def _summary(lease_id: str) -> dict[str, object]:
    # What the DAG's summarize task writes: it runs before the release, so it saw the lease active.
    return {
        "run_id": "manual__2026-01-01",
        "dates": ["2025-12-31"],
        "gpu_wait": {
            "lease_id": lease_id,
            "team": "perception",
            "pool": "local",
            "gpus": 2,
            "state": "active",
            "wait_seconds": 3.5,
        },
        "training": {"status": "SUCCEEDED", "metrics": {"auc": 0.91}},
    }


def _gpu_line(text: str) -> str:
    return next(line for line in text.splitlines() if "GPU wait" in line)


def _lease(url: str, clock: Clock, gpus: int) -> tuple[QuotaLedger, Lease]:
    ledger = QuotaLedger(url, clock=clock)
    ledger.upsert_pool("local", capacity=4)
    ledger.upsert_quota("perception", "local", nominal=4)
    request = LeaseRequest(key="d/r/wait_for_gpus/-1", team="perception", pool="local", gpus=gpus)
    lease = ledger.try_acquire(request)
    assert lease is not None
    return ledger, lease


def test_released_lease_is_reported_released_with_its_gpu_hours(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    clock = Clock()
    ledger, lease = _lease(url, clock, gpus=2)
    clock.advance(1800)
    ledger.release(lease.lease_id)

    final = final_lease(_summary(lease.lease_id), url)
    line = _gpu_line(format_summary(_summary(lease.lease_id), 12.0, final))

    assert line == (
        f"  GPU wait         3.5 s for 2 GPUs (team perception, lease {lease.lease_id}, "
        "released at 00:30:00 UTC, held 1800.0 s, 1.0000 GPU-hours)"
    )


def test_lease_still_held_is_shown_with_its_state(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    clock = Clock()
    _, lease = _lease(url, clock, gpus=1)

    final = final_lease(_summary(lease.lease_id), url)
    line = _gpu_line(format_summary(_summary(lease.lease_id), 1.0, final, now=clock.now.replace(minute=6)))

    assert line.endswith(", active, held 360.0 s, 0.1000 GPU-hours)")


def test_lease_missing_from_the_ledger_is_said_so(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    assert final_lease(_summary("gone"), url) is None
    assert _gpu_line(format_summary(_summary("gone"), 1.0, None)).endswith(
        "lease gone, not found in the ledger)"
    )
