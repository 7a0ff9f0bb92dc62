"""@task.kuberay with the function run on a real Ray cluster.

The Kubernetes API is the stand-in (there is no Kubernetes here). It plays KubeRay's submitter
against the real local Ray cluster: once the RayJob runs, the RayJob's entrypoint and runtime
environment are submitted under its ``status.jobId``, and the RayJob follows that job's status.
The task then reads the return value from the job's log through the dashboard, as it would
through a RayCluster's head service.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any

import pytest
from airflow.sdk import DAG, task
from nuro_ml.exceptions import KubeRayJobError
from nuro_ml.hooks.ray import RayHook

from tests.fixtures.kube_api import CONN_ID, JobScript, KubeApiStandIn, kube_api, kube_api_server  # noqa: F401
from tests.fixtures.ray_cluster import RayCluster
from tests.integration.kuberay.conftest import TaskInstanceStub, run_task

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def _operators(dashboard: str) -> tuple[Any, Any]:
    options: dict[str, Any] = {
        "kubernetes_conn_id": CONN_ID,
        "python": sys.executable,
        "poll_interval": 0.2,
        # The head service's in-cluster address, as an ingress would map it: here the real dashboard.
        "dashboard_url_template": dashboard,
    }
    with DAG("task_kuberay_it", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=UTC)):

        @task.kuberay(**options)
        def scene_speeds(speeds: list[float], *, scale: float) -> dict:
            import ray

            ray.init()

            @ray.remote
            def scaled(value: float) -> float:
                return value * scale

            values = ray.get([scaled.remote(s) for s in speeds])
            print(f"scaled {len(values)} speeds on the cluster")
            return {"max": max(values), "n": len(values)}

        @task.kuberay(**options)
        def broken_feature(rows: int) -> float:
            return 1 / rows

        return scene_speeds([3.0, 5.5, 4.0], scale=2.0).operator, broken_feature(0).operator


def test_return_value_and_failure_traceback_through_a_rayjob(
    ray_cluster: RayCluster,
    kube_api: KubeApiStandIn,  # noqa: F811
) -> None:
    kube_api.default_script = JobScript(ray_dashboard=ray_cluster.dashboard_url)
    ok_op, broken_op = _operators(ray_cluster.dashboard_url)

    ti = TaskInstanceStub(dag_id="task_kuberay_it", task_id="scene_speeds")
    outcome = run_task(ok_op, ti)
    assert outcome.error is None, outcome.error
    assert outcome.result == {"max": 11.0, "n": 3}
    (rayjob,) = kube_api.rayjobs()
    assert rayjob["status"]["jobDeploymentStatus"] == "Complete"
    # The function ran as the Ray job KubeRay's submitter started for this RayJob.
    logs = RayHook(None, address=ray_cluster.dashboard_url).get_job_logs(rayjob["status"]["jobId"])
    assert "scaled 3 speeds on the cluster" in logs

    failing = TaskInstanceStub(dag_id="task_kuberay_it", task_id="broken_feature")
    outcome = run_task(broken_op, failing)
    assert isinstance(outcome.error, KubeRayJobError)
    message = str(outcome.error)
    assert "Traceback (most recent call last)" in message
    assert "return 1 / rows" in message
    assert "ZeroDivisionError: division by zero" in message
