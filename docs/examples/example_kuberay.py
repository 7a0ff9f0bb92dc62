"""Run a Ray job on Kubernetes as a KubeRay RayJob, queued by Kueue."""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import DAG
from nuro_ml.kube.rayjob import HeadGroup, RayJobSpec, WorkerGroup
from nuro_ml.operators.kuberay import KubeRayJobOperator

with DAG(
    dag_id="example_kuberay",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["example", "kuberay"],
):
    # [START howto_operator_kuberay_job]
    train = KubeRayJobOperator(
        task_id="train",
        kubernetes_conn_id="kubernetes_default",
        namespace="ml-training",
        rayjob=RayJobSpec(
            entrypoint="python train_xgboost.py --num-workers 4 --gpus-per-worker 1",
            head=HeadGroup(cpu="2", memory="8Gi"),
            workers=[WorkerGroup(name="gpu", replicas=4, gpus=1, gpu_type="A100")],
            queue_name="perception",
        ),
        dashboard_url_template="https://ray.example.com/{namespace}/{cluster}/",
    )
    # [END howto_operator_kuberay_job]
