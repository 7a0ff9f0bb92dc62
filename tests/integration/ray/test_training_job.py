"""The real training workload through RayJobOperator on a two-node Ray cluster with logical GPUs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import xgboost as xgb
from nuro_ml import settings
from nuro_ml.hooks.ray import RayHook
from nuro_ml.operators.ray import RayJobOperator

from tests.integration.ray.conftest import jobs_of, run_deferrable
from tests.unit.ray.stubs import TaskInstanceStub

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def test_training_job_returns_metrics_and_writes_model(
    ray_cluster, hook: RayHook, ti: TaskInstanceStub, training_parquet: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "artifacts"
    op = RayJobOperator(
        task_id="train",
        address=ray_cluster.dashboard_url,
        ray_conn_id=None,
        entrypoint=(
            f"{sys.executable} train_xgboost.py --training-data {training_parquet} --output-dir {out}"
            " --num-workers 2 --gpus-per-worker 1 --num-boost-round 10 --checkpoint-every 5"
        ),
        runtime_env={
            "working_dir": str(settings.workloads_dir()),
            "env_vars": {"NURO_ML_DATA_DIR": str(tmp_path)},
        },
        poll_interval=1,
        deferrable=True,
    )
    result = run_deferrable(op, ti)

    sid = ti.xcom["ray_submission_id"]
    assert result["status"] == "SUCCEEDED" and result["submission_id"] == sid
    assert ti.xcom["ray_job_url"] == f"{ray_cluster.dashboard_url}/#/jobs/{sid}"
    metrics = result["metrics"]
    assert metrics["rows_used"] == 400 and metrics["train_rows"] + metrics["test_rows"] == 400
    # The label is learnable from deceleration and jerk: the model must beat chance clearly.
    assert metrics["auc"] > 0.8 and metrics["accuracy"] > 0.7
    assert metrics["boosting_rounds"] == 10
    assert result["num_workers"] == 2 and result["gpus_per_worker"] == 1.0

    model_path = Path(result["artifact_uri"].removeprefix("file://"))
    assert model_path == out / "model.ubj"
    booster = xgb.Booster()
    booster.load_model(str(model_path))
    assert booster.num_boosted_rounds() == 10
    assert json.loads((out / "metrics.json").read_text())["metrics"] == metrics
    # Ray Train checkpointed under the run key shared by all tries of the task instance.
    run_dir = out / "checkpoints" / sid
    assert sorted(p.name for p in run_dir.glob("checkpoint_*")), f"no checkpoints in {run_dir}"

    logs = capsys.readouterr().out
    assert "Started training worker group of size 2" in logs
    assert "{'CPU': 1.0, 'GPU': 1.0}" in logs  # each worker reserved one logical GPU

    # A later try of the same task instance re-attaches to the finished job: nothing is trained twice.
    again = RayJobOperator(
        task_id="train",
        address=ray_cluster.dashboard_url,
        ray_conn_id=None,
        entrypoint="unused",
        deferrable=True,
    )
    retry_ti = TaskInstanceStub(dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id, try_number=2)
    assert run_deferrable(again, retry_ti)["metrics"] == metrics
    assert jobs_of(hook, ti) == [sid]
