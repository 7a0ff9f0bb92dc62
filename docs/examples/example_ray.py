"""Submit a training job to a Ray cluster through the Ray Jobs API."""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import DAG
from nuro_ml import settings
from nuro_ml.operators.ray import RayJobOperator

with DAG(
    dag_id="example_ray_job",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["example", "ray"],
):
    # [START howto_operator_ray_job]
    train = RayJobOperator(
        task_id="train",
        ray_conn_id="ray_default",
        entrypoint="python train_xgboost.py --num-workers 2 --gpus-per-worker 1",
        runtime_env={"working_dir": str(settings.workloads_dir())},
        # Secrets go to the job's environment from a connection, never through the entrypoint.
        env_from_connections={"FEAST_REGISTRY_PASSWORD": "feast_default"},
        entrypoint_num_cpus=1,
    )
    # [END howto_operator_ray_job]
