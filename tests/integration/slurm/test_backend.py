"""SlurmBackend reads GPU capacity from the real local slurmctld."""

from __future__ import annotations

import time

import pytest
from nuro_ml.capacity.backends import load_backend
from nuro_ml.hooks.slurm import SlurmHook, SlurmJobSpec
from nuro_ml.slurm.state import SlurmJobState

pytestmark = pytest.mark.integration


def capacity(backend) -> list[tuple[str, int, int]]:
    return [(p.pool, p.total_gpus, p.free_gpus) for p in backend.get_capacity()]


async def test_free_gpus_drop_while_a_gpu_job_runs(slurm, tmp_path):
    backend = load_backend({"type": "slurm", "slurm_conf": str(slurm.slurm_conf)})
    assert capacity(backend) == [("debug", 4, 4)]

    hook = SlurmHook(None, slurm_conf=str(slurm.slurm_conf))
    job_id = hook.submit_job(
        SlurmJobSpec(script="sleep 120", name="gpu-hog", gpus=3, working_directory=str(tmp_path))
    )
    deadline = time.monotonic() + 60
    while hook.get_job(job_id).state is not SlurmJobState.RUNNING:
        assert time.monotonic() < deadline, "GPU job never started"
        time.sleep(0.1)

    assert capacity(backend) == [("debug", 4, 1)]
    (pool,) = await backend.aget_capacity()
    assert (pool.pool, pool.total_gpus, pool.free_gpus, pool.source) == ("debug", 4, 1, "slurm:debug")

    hook.cancel_job(job_id)
    deadline = time.monotonic() + 60
    while capacity(backend) != [("debug", 4, 4)]:
        assert time.monotonic() < deadline, "GPUs were not released after scancel"
        time.sleep(0.1)


def test_partition_maps_to_pool_through_a_connection(slurm, slurm_conn_id):
    backend = load_backend(
        {
            "type": "slurm",
            "conn_id": slurm_conn_id,
            "partitions": ["debug"],
            "pool_for_partition": {"debug": "local"},
        }
    )
    assert capacity(backend) == [("local", 4, 4)]
