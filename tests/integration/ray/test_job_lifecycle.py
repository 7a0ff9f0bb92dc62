"""RayJobOperator and the Ray hooks against a real cluster with cheap jobs: failure, retry, kill."""

from __future__ import annotations

import asyncio
import shlex
import sys
import threading
import time

import pytest
from airflow.sdk.exceptions import TaskDeferred
from nuro_ml.exceptions import RayJobError, RayJobNotFoundError
from nuro_ml.hooks.ray import AsyncRayHook, RayHook, RayJobStatus
from nuro_ml.operators.ray import RayJobOperator

from tests.integration.ray.conftest import jobs_of, run_deferrable
from tests.polling import wait_for
from tests.unit.ray.stubs import TaskInstanceStub

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def python_job(code: str) -> str:
    return f"{shlex.quote(sys.executable)} -u -c {shlex.quote(code)}"


def operator(cluster, entrypoint: str, **kwargs: object) -> RayJobOperator:
    kwargs.setdefault("deferrable", False)
    return RayJobOperator(
        task_id="train",
        address=cluster.dashboard_url,
        ray_conn_id=None,
        entrypoint=entrypoint,
        poll_interval=0.5,
        **kwargs,  # type: ignore[arg-type]
    )


def wait_for_status(hook: RayHook, sid: str, wanted: set[RayJobStatus], timeout: float = 120) -> RayJobStatus:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = hook.find_job(sid)
        if info is not None and info.status in wanted:
            return info.status
        time.sleep(0.3)
    raise AssertionError(f"job {sid} never reached {wanted}")


FAILING = python_job(
    "import sys\n"
    "for i in range(60): print(f'preparing batch {i}')\n"
    "print('loading scene_stats for 2026-11-24')\n"
    "sys.exit('KeyError: feature column hard_brake missing in scene_stats')\n"
)


def test_failure_propagates_with_the_job_log_tail(ray_cluster, ti: TaskInstanceStub) -> None:
    op = operator(ray_cluster, FAILING, log_tail_lines=3, deferrable=True)
    with pytest.raises(RayJobError) as err:
        run_deferrable(op, ti)
    message = str(err.value)
    sid = ti.xcom["ray_submission_id"]
    assert message.startswith(f"Ray job {sid} FAILED (JOB_ENTRYPOINT_COMMAND_ERROR): ")
    assert "exit code 1" in message
    assert message.endswith(
        "preparing batch 59\nloading scene_stats for 2026-11-24\n"
        "KeyError: feature column hard_brake missing in scene_stats"
    )
    assert "preparing batch 58" not in message


def test_retry_after_worker_death_reattaches_instead_of_resubmitting(
    ray_cluster, hook: RayHook, ti: TaskInstanceStub, capsys
) -> None:
    code = (
        "import time, json\n"
        "for step in range(4):\n"
        "    print(f'step {step}', flush=True); time.sleep(1)\n"
        "print('NURO_ML_RESULT ' + json.dumps({'metrics': {'steps': 4}, 'artifact_uri': 'file:///none'}))\n"
    )
    first = operator(ray_cluster, python_job(code), deferrable=True)
    with pytest.raises(TaskDeferred):
        first.execute({"ti": ti})
    # The worker "dies" here while the job runs: the deferred task is never resumed.
    sid = ti.xcom["ray_submission_id"]
    assert hook.get_job_status(sid) in {RayJobStatus.PENDING, RayJobStatus.RUNNING}

    # The scheduler retries the task on another worker: a brand-new operator and task instance.
    retry_ti = TaskInstanceStub(dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id, try_number=2)
    result = operator(ray_cluster, python_job(code)).execute({"ti": retry_ti})

    assert result["metrics"] == {"steps": 4} and result["submission_id"] == sid
    assert jobs_of(hook, ti) == [sid]  # exactly one submission for the task instance
    out = capsys.readouterr().out
    assert all(out.count(f"[ray] step {n}") == 1 for n in range(4)), out[-2000:]


def test_retry_after_a_failed_job_submits_a_new_one(ray_cluster, hook: RayHook, ti: TaskInstanceStub) -> None:
    with pytest.raises(RayJobError):
        operator(ray_cluster, FAILING).execute({"ti": ti})
    sid = ti.xcom["ray_submission_id"]
    retry_ti = TaskInstanceStub(dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id, try_number=2)
    result = operator(ray_cluster, python_job("print('NURO_ML_RESULT {\"metrics\": {}}')")).execute(
        {"ti": retry_ti}
    )
    assert result["submission_id"] == f"{sid}-try2"
    assert jobs_of(hook, ti) == [sid, f"{sid}-try2"]
    assert hook.get_job_status(sid) is RayJobStatus.FAILED


def test_on_kill_stops_the_running_job(ray_cluster, hook: RayHook, ti: TaskInstanceStub) -> None:
    op = operator(ray_cluster, python_job("import time\nprint('training', flush=True)\ntime.sleep(600)\n"))
    outcome: dict[str, BaseException] = {}

    def run() -> None:
        try:
            op.execute({"ti": ti})
        except BaseException as err:  # the worker thread reports what execute raised
            outcome["error"] = err

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    sid = wait_for(lambda: ti.xcom.get("ray_submission_id"), "the submission id in XCom", timeout=60)
    wait_for_status(hook, sid, {RayJobStatus.RUNNING})

    op.on_kill()

    assert wait_for_status(hook, sid, {RayJobStatus.STOPPED, RayJobStatus.FAILED}) is RayJobStatus.STOPPED
    worker.join(timeout=60)
    assert isinstance(outcome.get("error"), RayJobError)
    assert f"Ray job {sid} STOPPED" in str(outcome["error"])


async def test_async_hook_reads_logs_and_reports_missing_jobs(ray_cluster, hook: RayHook) -> None:
    sid = hook.submit_job(
        entrypoint=python_job("print('hello from ray')"), submission_id=f"hook-it-{time.time_ns()}"
    )
    async_hook = AsyncRayHook(None, address=ray_cluster.dashboard_url)
    async with async_hook.session():
        for _ in range(600):
            info = await async_hook.get_job_info(sid)
            if info.status.is_terminal():
                break
            await asyncio.sleep(0.2)
        assert info.status is RayJobStatus.SUCCEEDED
        assert "hello from ray" in await async_hook.get_job_logs(sid)
        assert await async_hook.stop_job(sid) is False  # already finished
        with pytest.raises(RayJobNotFoundError, match="does not exist"):
            await async_hook.get_job_info("no-such-job-anywhere")
    assert hook.find_job("no-such-job-anywhere") is None
    assert "hello from ray" in hook.get_job_logs(sid)
