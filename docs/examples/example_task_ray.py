"""TaskFlow functions that run as Ray jobs: on a Ray cluster, and as a KubeRay RayJob."""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import DAG, task
from nuro_ml.kube.rayjob import WorkerGroup

with DAG(
    dag_id="example_task_ray",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["example", "ray"],
):
    # [START howto_decorator_ray]
    @task.ray(ray_conn_id="ray_default", runtime_env={"pip": ["pyarrow"]}, entrypoint_num_cpus=1)
    def scene_speed_stats(table: str, day: str) -> dict:
        # The function runs on the cluster: its imports belong inside it.
        import pyarrow.dataset as ds
        import ray

        ray.init()
        speeds = ds.dataset(table, partitioning="hive").to_table(filter=ds.field("date") == day)
        column = speeds.column("speed_mean_mps").to_pylist()
        return {"scenes": len(column), "max_speed": max(column, default=0.0)}

    # [END howto_decorator_ray]

    # [START howto_decorator_kuberay]
    @task.kuberay(
        kubernetes_conn_id="kubernetes_default",
        namespace="ml-training",
        rayjob={"workers": [WorkerGroup(name="gpu", replicas=2, gpus=1, gpu_type="A100")]},
    )
    def fit(stats: dict, rounds: int) -> dict:
        import ray

        ray.init()
        return {"rounds": rounds, "trained_on": stats["scenes"]}

    # [END howto_decorator_kuberay]

    fit(scene_speed_stats("/data/etl/scene_stats", "{{ ds }}"), rounds=40)
