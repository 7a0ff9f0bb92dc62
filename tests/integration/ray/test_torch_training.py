"""The PyTorch workload on a two-node Ray cluster: Ray Data reads moto-S3 shards through the NVMe cache."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from nuro_ml import settings
from nuro_ml.operators.ray import RayJobOperator
from nuro_ml.training_data.spec import DatasetSpec
from nuro_ml.training_data.staging import stage_shards
from nuro_ml.training_data.synthetic import write_ego_motion

from tests.fixtures.s3 import moto_endpoint, s3_client, s3_env  # noqa: F401
from tests.fixtures.torch_support import require_torch
from tests.integration.ray.conftest import run_deferrable
from tests.unit.ray.stubs import TaskInstanceStub

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

DAY = date(2026, 11, 24)
VEHICLES = [f"veh-{i:03d}" for i in range(8)]


@pytest.fixture(scope="module")
def manifest_uri(moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> str:  # noqa: F811
    etl_root = tmp_path_factory.mktemp("etl")
    write_ego_motion(etl_root, [DAY], VEHICLES, drives_per_day=1, drive_seconds=150.0)
    client = s3_client(moto_endpoint)
    client.create_bucket(Bucket="training")
    spec = DatasetSpec(start=DAY, end=DAY, shard_rows=200)
    return stage_shards(spec, etl_root, "s3://training/brake", client).manifest_uri


def _train_workers(dashboard_url: str) -> list[Any]:
    from ray.util.state import list_actors

    actors = list_actors(address=dashboard_url, filters=[("state", "=", "ALIVE")], limit=1000)
    return [a for a in actors if "TrainWorker" in (a.class_name or "")]


def _train_operator(
    ray_cluster: Any,
    endpoint: str,
    manifest_uri: str,
    tmp_path: Path,
    out: Path,
    *,
    epochs: int,
    task_id: str = "train",
) -> RayJobOperator:
    return RayJobOperator(
        task_id=task_id,
        address=ray_cluster.dashboard_url,
        ray_conn_id=None,
        entrypoint=(
            f"{sys.executable} train_torch.py --manifest {manifest_uri} --output-dir {out}"
            f" --cache-dir {tmp_path / 'nvme'} --num-workers 2 --epochs {epochs} --batch-size 64"
            # The cluster's GPUs are logical: reserved as the DAG does, trained on CPU with gloo.
            " --gpus-per-worker 1 --use-gpu auto"
        ),
        runtime_env={
            "working_dir": str(settings.workloads_dir()),
            "env_vars": {"NURO_ML_DATA_DIR": str(tmp_path), **s3_env(endpoint)},
        },
        poll_interval=1,
        deferrable=True,
    )


def test_torch_workload_trains_through_cache_survives_a_killed_worker_and_a_second_job_reads_locally(
    ray_cluster,
    moto_endpoint: str,  # noqa: F811
    manifest_uri: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    require_torch()
    out = tmp_path / "artifacts"
    ti = TaskInstanceStub(dag_id="torch_it", run_id=f"it__{request.node.name}", task_id="train")
    op = _train_operator(ray_cluster, moto_endpoint, manifest_uri, tmp_path, out, epochs=5)
    outcome: dict[str, Any] = {}

    def submit() -> None:
        try:
            outcome["result"] = run_deferrable(op, ti)
        except BaseException as exc:  # surfaced by the assertion below
            outcome["error"] = exc

    runner = threading.Thread(target=submit, daemon=True)
    runner.start()
    # Kill one training worker (SIGKILL, no cleanup) once the Train controller has registered a
    # checkpoint (it records them in this snapshot, which is what a restarted group restores from).
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and runner.is_alive() and time.monotonic() < deadline:
        if list(out.glob("checkpoints/*/checkpoint_manager_snapshot.json")):
            workers = _train_workers(ray_cluster.dashboard_url)
            if workers:
                killed = workers[-1].pid
                os.kill(killed, signal.SIGKILL)
                break
        time.sleep(0.05)
    runner.join(timeout=420)
    assert "error" not in outcome, outcome.get("error")
    assert killed is not None, "training finished before a worker could be killed"
    result = outcome["result"]
    assert result["status"] == "SUCCEEDED"

    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert result["metrics"]["beats_baseline"] is True
    assert metrics["baseline"]["name"] == "logistic_regression"
    assert metrics["model"]["average_precision"] > metrics["baseline"]["average_precision"]
    assert metrics["model"]["auc"] > 0.9
    # The replacement worker group restored the checkpoint instead of starting over.
    assert metrics["resumed_from_epoch"] is not None and metrics["resumed_from_epoch"] >= 0
    history = metrics["history"]
    assert [h["epoch"] for h in history] == list(range(5))
    assert history[0]["remote_bytes"] > 0 and history[0]["cache_misses"] > 0
    for later in history[1:]:
        # Every shard of every later epoch, before and after the restart, came from local NVMe.
        assert later["remote_bytes"] == 0 and later["cache_misses"] == 0, later
        assert later["cache_hit_rate"] == 1.0
        # Counted by the Ray Data read tasks, one per shard read.
        assert later["cache_hits"] == later["shards_read"] > 0
    assert (out / "model.pt").stat().st_size > 0

    # A second job on the same nodes (its own run, from scratch) finds every shard in the cache.
    again = tmp_path / "again"
    ti2 = TaskInstanceStub(dag_id="torch_it", run_id=f"it__{request.node.name}", task_id="train_again")
    op2 = _train_operator(
        ray_cluster, moto_endpoint, manifest_uri, tmp_path, again, epochs=1, task_id="train_again"
    )
    assert run_deferrable(op2, ti2)["status"] == "SUCCEEDED"
    [first] = json.loads((again / "metrics.json").read_text())["metrics"]["history"]
    assert first["remote_bytes"] == 0 and first["cache_misses"] == 0, first
    assert first["cache_hits"] == first["shards_read"] > 0
