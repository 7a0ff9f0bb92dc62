"""@task.ray on a real local Ray cluster: the value comes back, a failure carries Ray's traceback."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import pytest
from airflow.sdk import DAG, task
from nuro_ml.exceptions import RayJobError
from nuro_ml.hooks.ray import RayHook

from tests.integration.ray.conftest import jobs_of, run_deferrable
from tests.unit.ray.stubs import TaskInstanceStub

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def _operators(address: str):
    with DAG("task_ray_it", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=UTC)):

        @task.ray(address=address, ray_conn_id=None, python=sys.executable, poll_interval=0.5)
        def scene_speeds(speeds: list[float], *, scale: float) -> dict:
            import ray

            ray.init()

            @ray.remote
            def scaled(value: float) -> float:
                return value * scale

            values = ray.get([scaled.remote(s) for s in speeds])
            print(f"scaled {len(values)} speeds on the cluster")
            return {"max": max(values), "n": len(values)}

        @task.ray(address=address, ray_conn_id=None, python=sys.executable, poll_interval=0.5)
        def broken_feature(rows: int) -> float:
            import ray

            ray.init()

            @ray.remote
            def ratio(n: int) -> float:
                return 1 / n

            return ray.get(ratio.remote(rows))

        return scene_speeds([3.0, 5.5, 4.0], scale=2.0).operator, broken_feature(0).operator


def test_return_value_and_failure_traceback(ray_cluster, ti: TaskInstanceStub) -> None:
    ok_op, broken_op = _operators(ray_cluster.dashboard_url)

    # Deferred through the real trigger, as the triggerer would run it.
    assert run_deferrable(ok_op, ti) == {"max": 11.0, "n": 3}
    hook = RayHook(None, address=ray_cluster.dashboard_url)
    [submission_id] = jobs_of(hook, ti)
    assert ti.xcom["ray_submission_id"] == submission_id
    assert "scaled 3 speeds on the cluster" in hook.get_job_logs(submission_id)

    # Run again (a retry on another worker): re-attached, same value, nothing submitted twice.
    again = TaskInstanceStub(dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id, try_number=2)
    ok_op.deferrable = False
    assert ok_op.execute({"ti": again}) == {"max": 11.0, "n": 3}
    assert jobs_of(hook, ti) == [submission_id]

    failing = TaskInstanceStub(dag_id=ti.dag_id, run_id=ti.run_id, task_id="broken_feature")
    with pytest.raises(RayJobError) as err:
        run_deferrable(broken_op, failing)
    message = str(err.value)
    assert "FAILED" in message
    # Ray's traceback of the remote task, through the function's own line, to the error.
    assert "Traceback (most recent call last)" in message
    assert "return ray.get(ratio.remote(rows))" in message
    assert "ZeroDivisionError: division by zero" in message
