"""Ray capacity back end against a real local Ray head with 4 logical GPUs."""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from nuro_ml.capacity.backends import load_backend
from nuro_ml.capacity.ledger import QuotaLedger
from nuro_ml.triggers.gpu_capacity import GpuCapacityTrigger

from tests.polling import await_for, wait_for

pytestmark = pytest.mark.integration

HOLD_SCRIPT = """
import pathlib, sys, time
import ray

ray.init()

@ray.remote(num_gpus=2)
class Holder:
    def ready(self):
        return True

holder = Holder.remote()
ray.get(holder.ready.remote())
pathlib.Path(sys.argv[1]).write_text("held")
release = pathlib.Path(sys.argv[2])
while not release.exists():
    time.sleep(0.2)
"""


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def _waiting(ledger: QuotaLedger, key: str) -> bool:
    """Whether an admission round with the cluster's numbers has left ``key`` waiting."""
    requests = ledger.requests(key=key)
    return bool(requests) and requests[0].wait_reason not in (None, "backend_unreachable")


def _free(backend_config: dict) -> tuple[int, int]:
    (capacity,) = load_backend(backend_config).get_capacity()
    return capacity.total_gpus, capacity.free_gpus


@pytest.fixture(params=["dashboard", "gcs"])
def backend_config(request, ray_head) -> dict:
    address = ray_head.dashboard_url if request.param == "dashboard" else ray_head.gcs_address
    return {"type": "ray", "address": address, "pool": "local"}


@pytest.fixture
def two_gpus_held(ray_head, tmp_path: Path) -> Iterator[Path]:
    """A Ray job holding 2 GPUs until the returned file is created."""
    script = tmp_path / "hold.py"
    script.write_text(HOLD_SCRIPT)
    held, release = tmp_path / "held", tmp_path / "release"
    job = _post(
        f"{ray_head.dashboard_url}/api/jobs/",
        {"entrypoint": f"{sys.executable} {script} {held} {release}"},
    )
    try:
        wait_for(held.exists, "the job to hold 2 GPUs")
        yield release
    finally:
        release.write_text("done")
        _post(f"{ray_head.dashboard_url}/api/jobs/{job['submission_id']}/stop", {})


def test_reports_total_and_free_gpus(backend_config: dict, ray_head) -> None:
    wait_for(lambda: _free(backend_config) == (ray_head.gpus, ray_head.gpus), "all 4 GPUs free", interval=0.5)


def test_gpus_held_by_a_job_are_not_free(backend_config: dict, two_gpus_held: Path, ray_head) -> None:
    wait_for(
        lambda: _free(backend_config) == (ray_head.gpus, ray_head.gpus - 2), "2 GPUs in use", interval=0.5
    )
    two_gpus_held.write_text("done")
    wait_for(lambda: _free(backend_config) == (ray_head.gpus, ray_head.gpus), "GPUs back", interval=0.5)


def test_trigger_waits_for_gpus_the_cluster_has_in_use(ray_head, two_gpus_held: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = QuotaLedger(url)
    ledger.upsert_pool("local", capacity=ray_head.gpus)
    ledger.upsert_quota("perception", "local", nominal=ray_head.gpus)
    backend = {"type": "ray", "address": ray_head.gcs_address, "pool": "local"}
    wait_for(lambda: _free(backend)[1] == ray_head.gpus - 2, "2 GPUs in use", interval=0.5)

    async def scenario() -> dict:
        trigger = GpuCapacityTrigger(
            request_key="train/run/wait_for_gpus/-1",
            team="perception",
            pool="local",
            gpus=3,
            backend=backend,
            ledger_url=url,
            poll_interval=0.5,
        )
        task = asyncio.ensure_future(trigger.run().asend(None))
        # The ledger alone would admit 3 of 4 GPUs; the cluster has only 2 free: a round with the
        # cluster's numbers leaves it waiting.
        await await_for(
            lambda: _waiting(ledger, trigger.request_key), "a round that leaves the request waiting"
        )
        assert not task.done()
        assert ledger.active_lease("train/run/wait_for_gpus/-1") is None
        two_gpus_held.write_text("done")
        event = await asyncio.wait_for(task, 120)
        return event.payload

    payload = asyncio.run(scenario())
    assert payload["status"] == "success"
    assert ledger.lease(payload["lease_id"]).gpus == 3
