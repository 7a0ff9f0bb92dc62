"""Register quotas, wait for GPUs under the team's quota, train, and release the lease."""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import DAG
from nuro_ml.operators.capacity import GpuLeaseReleaseOperator, GpuQuotaOperator
from nuro_ml.operators.ray import RayJobOperator
from nuro_ml.sensors.gpu_capacity import GpuCapacitySensor

with DAG(
    dag_id="example_gpu_capacity",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["example", "capacity"],
):
    # [START howto_operator_gpu_quota]
    quotas = GpuQuotaOperator(
        task_id="quotas",
        pools=[{"name": "a100", "capacity": 64, "gpu_type": "a100"}],
        quotas=[
            {"team": "perception", "pool": "a100", "nominal": 32, "borrowing_limit": 16},
            {"team": "planning", "pool": "a100", "nominal": 32, "borrowing_limit": 0},
        ],
    )
    # [END howto_operator_gpu_quota]

    # [START howto_sensor_gpu_capacity]
    wait_for_gpus = GpuCapacitySensor(
        task_id="wait_for_gpus",
        team="perception",
        gpus=8,
        pool="a100",
        backend={"type": "ray", "address": "http://ray-head:8265"},
        priority=10,
        poke_interval=30,
        timeout=6 * 3600,
    )
    # [END howto_sensor_gpu_capacity]

    train = RayJobOperator(
        task_id="train",
        entrypoint="python train_xgboost.py --num-workers 8",
        address="http://ray-head:8265",
    )

    # [START howto_operator_gpu_lease_release]
    release = GpuLeaseReleaseOperator(task_id="release_gpus", sensor_task_id="wait_for_gpus")
    # [END howto_operator_gpu_lease_release]

    quotas >> wait_for_gpus >> train >> release.as_teardown(setups=wait_for_gpus)
