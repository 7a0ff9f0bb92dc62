"""The main DAG with ``model=torch``: staged shards in S3 (moto), PyTorch on the run's Ray head.

On demand (``make cluster-test``): the whole pipeline runs once more, ETL and Feast included,
which takes about five minutes on a loaded 2-core machine. It needs no cluster processes: like
the default e2e it runs ``airflow dags test``, with the object-storage connection pointing at a
moto S3 server on loopback, and checks what a user checks afterwards: the run succeeded, the
model artifact and ``metrics.json`` are where the result says, the network beats the named
baseline on held-out drives, and the later epochs read no shard from object storage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.main_dag_run import DAG_ID, migrated_env, run_conf, run_main_dag
from tests.fixtures.s3 import moto_endpoint, s3_client  # noqa: F401
from tests.fixtures.torch_support import require_torch

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(1500)]

VEHICLES = [f"veh-{i:03d}" for i in range(1, 7)]
DRIVE_SECONDS = 120
# About a hundred optimiser steps over two workers: a few hundred windows per worker and epoch.
EPOCHS = 12


@pytest.fixture(scope="module")
def torch_run(moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:  # noqa: F811
    require_torch()
    root = tmp_path_factory.mktemp("e2e-torch")
    data_dir = root / "data"
    s3_client(moto_endpoint).create_bucket(Bucket="training")
    env = migrated_env(
        root,
        data_dir,
        AIRFLOW_CONN_SHARDS_S3=json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {"endpoint_url": moto_endpoint, "region_name": "us-east-1"},
            }
        ),
        # Each Ray node caches shards here (one machine: head and workers share it).
        NURO_ML_SHARD_CACHE=str(root / "nvme"),
    )
    conf = run_conf(
        VEHICLES,
        DRIVE_SECONDS,
        model="torch",
        shards_uri="s3://training/brake",
        aws_conn_id="shards_s3",
        epochs=EPOCHS,
    )
    result = run_main_dag(env, conf)
    if result.returncode != 0:
        train_logs = sorted(Path(env["AIRFLOW_HOME"]).rglob("task_id=train/**/*.log"))
        detail = "\n".join(f"--- {p}\n{p.read_text()[-6000:]}" for p in train_logs)
        raise AssertionError((result.stdout + result.stderr)[-4000:] + "\n" + detail)
    summaries = sorted((data_dir / "summaries" / DAG_ID).glob("*.json"))
    assert summaries, f"no run summary under {data_dir / 'summaries'}"
    return dict(json.loads(summaries[-1].read_text()))


def test_torch_model_beats_the_baseline_and_wrote_its_artifacts(torch_run: dict[str, Any]) -> None:
    training = torch_run["training"]
    assert training["status"] == "SUCCEEDED"
    model = Path(str(training["artifact_uri"]).removeprefix("file://"))
    assert model.name == "model.pt" and model.stat().st_size > 0
    doc = json.loads(Path(str(training["metrics_uri"]).removeprefix("file://")).read_text())
    metrics = doc["metrics"]
    assert metrics["baseline"]["name"] == "logistic_regression"
    assert metrics["primary_metric"] == "average_precision"
    assert metrics["model"]["average_precision"] > metrics["baseline"]["average_precision"]
    assert metrics["beats_baseline"] is True and training["metrics"]["beats_baseline"] is True
    assert metrics["holdout_rows"] > 0 and metrics["holdout_drives"]
    assert doc["num_workers"] == 2


def test_later_epochs_read_every_shard_from_the_cache(torch_run: dict[str, Any]) -> None:
    history = torch_run["training"]["metrics"]["input"]
    assert history["first_epoch_remote_bytes"] > 0
    assert history["last_epoch_remote_bytes"] == 0
    assert history["last_epoch_cache_hit_rate"] == 1.0
