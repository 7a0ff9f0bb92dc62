"""SlurmJobOperator against the real local Slurm: success, failure, cancel, retries."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from pathlib import Path

import pytest
from airflow.sdk.exceptions import TaskDeferred
from nuro_ml.exceptions import SlurmJobError
from nuro_ml.hooks.slurm import SlurmHook
from nuro_ml.operators.slurm import XCOM_JOB_ID, SlurmJobOperator
from nuro_ml.slurm.state import SlurmJobState
from nuro_ml.triggers.slurm import SlurmJobTrigger

from tests.fixtures.slurm import SlurmCluster, task_context
from tests.polling import wait_for

pytestmark = pytest.mark.integration


def run_id() -> str:
    return f"manual__{uuid.uuid4().hex[:8]}"


def operator(conn_id: str, workdir: Path, **kwargs) -> SlurmJobOperator:
    kwargs.setdefault("task_id", "train")
    return SlurmJobOperator(
        slurm_conn_id=conn_id, working_directory=str(workdir), poll_interval=0.2, **kwargs
    )


def jobs_named(slurm: SlurmCluster, name: str) -> list[str]:
    """Ids of every job slurmctld knows under ``name``, in submission order."""
    return sorted(slurm.run("squeue", "-h", "--states=all", f"--name={name}", "-o", "%i").split(), key=int)


def wait_for_state(hook: SlurmHook, job_id: str, state: SlurmJobState) -> None:
    deadline = time.monotonic() + 60
    while (current := hook.get_job(job_id).state) is not state:
        if current.is_terminal() or time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} is {current}, never reached {state}")
        time.sleep(0.1)


async def test_deferrable_success_pushes_job_id_and_gets_output(slurm, slurm_conn_id, tmp_path):
    ctx = task_context("slurm_it", run_id(), "train")
    op = operator(
        slurm_conn_id,
        tmp_path,
        script="#SBATCH --cpus-per-task=1\necho gpus=$CUDA_VISIBLE_DEVICES stage=$STAGE\n",
        gpus=2,
        environment={"STAGE": "train"},
    )
    with pytest.raises(TaskDeferred) as deferred:
        await asyncio.to_thread(op.execute, ctx)
    trigger = deferred.value.trigger
    assert isinstance(trigger, SlurmJobTrigger)
    assert deferred.value.method_name == "execute_complete"
    job_id = ctx["ti"].xcoms[XCOM_JOB_ID]
    assert trigger.serialize()[1]["job_id"] == job_id

    event = await trigger.run().asend(None)
    assert event.payload["status"] == "success"
    assert event.payload["job"]["exit_code"] == 0

    assert await asyncio.to_thread(op.execute_complete, ctx, event.payload) == job_id
    info = SlurmHook(slurm_conn_id).get_job(job_id)
    assert info.state is SlurmJobState.COMPLETED
    assert info.partition == slurm.partition
    assert info.comment == f"nuro-ml:slurm_it/{ctx['run_id']}/train/-1"
    assert Path(info.stdout_path).read_text() == "gpus=0,1 stage=train\n"


def test_failure_reports_exit_code_and_log_tail(slurm, slurm_conn_id, tmp_path):
    op = operator(
        slurm_conn_id,
        tmp_path,
        script="echo loading shards\necho 'ValueError: shard 7 is corrupt' >&2\nexit 3\n",
        deferrable=False,
        log_tail_lines=5,
    )
    ctx = task_context("slurm_it", run_id(), "train")
    with pytest.raises(SlurmJobError) as err:
        op.execute(ctx)
    job_id = ctx["ti"].xcoms[XCOM_JOB_ID]
    message = str(err.value)
    assert f"Slurm job {job_id} " in message
    assert "is FAILED with exit code 3, reason NonZeroExitCode" in message
    assert message.endswith("loading shards\nValueError: shard 7 is corrupt")


def test_on_kill_cancels_the_running_job(slurm, slurm_conn_id, tmp_path):
    op = operator(slurm_conn_id, tmp_path, script="echo started; sleep 120", gpus=1, deferrable=False)
    ctx = task_context("slurm_it", run_id(), "train")
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            op.execute(ctx)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    hook = SlurmHook(slurm_conn_id)
    job_id = wait_for(lambda: ctx["ti"].xcoms.get(XCOM_JOB_ID), "the job id in XCom", timeout=60)
    wait_for_state(hook, job_id, SlurmJobState.RUNNING)

    op.on_kill()
    worker.join(timeout=60)
    assert not worker.is_alive()
    assert hook.get_job(job_id).state is SlurmJobState.CANCELLED
    (error,) = outcome
    assert isinstance(error, SlurmJobError)
    assert f"Slurm job {job_id} " in str(error) and "is CANCELLED" in str(error)


def test_retry_reattaches_to_the_running_job(slurm, slurm_conn_id, tmp_path):
    rid = run_id()
    script = "sleep 2; echo trained"
    first_ctx = task_context("slurm_it", rid, "train", map_index=0, try_number=1)
    with pytest.raises(TaskDeferred) as first:
        operator(slurm_conn_id, tmp_path, script=script).execute(first_ctx)

    # The worker running try 1 died; try 2 runs the same task instance again.
    retry_ctx = task_context("slurm_it", rid, "train", map_index=0, try_number=2)
    retry = operator(slurm_conn_id, tmp_path, script=script)
    with pytest.raises(TaskDeferred) as second:
        retry.execute(retry_ctx)

    job_id = first_ctx["ti"].xcoms[XCOM_JOB_ID]
    assert retry_ctx["ti"].xcoms[XCOM_JOB_ID] == job_id
    assert second.value.trigger.job_id == first.value.trigger.job_id == job_id
    name = SlurmHook(slurm_conn_id).get_job(job_id).name
    assert jobs_named(slurm, name) == [job_id]

    # Another map index of the same task is a different job.
    other_ctx = task_context("slurm_it", rid, "train", map_index=1)
    with pytest.raises(TaskDeferred):
        operator(slurm_conn_id, tmp_path, script=script).execute(other_ctx)
    assert other_ctx["ti"].xcoms[XCOM_JOB_ID] != job_id

    # Once the job has completed, a further retry returns at once without resubmitting.
    wait_for_state(SlurmHook(slurm_conn_id), job_id, SlurmJobState.COMPLETED)
    late_ctx = task_context("slurm_it", rid, "train", map_index=0, try_number=3)
    assert operator(slurm_conn_id, tmp_path, script=script).execute(late_ctx) == job_id
    assert jobs_named(slurm, name) == [job_id]


def test_retry_after_a_failed_job_submits_a_new_one(slurm, slurm_conn_id, tmp_path):
    marker = tmp_path / "first-try-done"
    # Fails the first time it runs, succeeds afterwards: a transient failure.
    script = f"if [ ! -e {marker} ]; then touch {marker}; echo transient >&2; exit 1; fi\necho ok\n"
    rid = run_id()
    ctx1 = task_context("slurm_it", rid, "flaky", try_number=1)
    with pytest.raises(SlurmJobError, match="exit code 1"):
        operator(slurm_conn_id, tmp_path, task_id="flaky", script=script, deferrable=False).execute(ctx1)
    ctx2 = task_context("slurm_it", rid, "flaky", try_number=2)
    job2 = operator(slurm_conn_id, tmp_path, task_id="flaky", script=script, deferrable=False).execute(ctx2)
    job1 = ctx1["ti"].xcoms[XCOM_JOB_ID]
    assert job2 != job1
    hook = SlurmHook(slurm_conn_id)
    assert hook.get_job(job1).state is SlurmJobState.FAILED
    assert hook.get_job(job2).state is SlurmJobState.COMPLETED
    assert jobs_named(slurm, hook.get_job(job1).name) == [job1, job2]


def test_script_path_and_worker_secrets_stay_out_of_the_job(slurm, slurm_conn_id, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", "postgres://user:hunter2@db/x")
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/bash\n#SBATCH --cpus-per-task=2\nenv | sort\n")
    op = operator(
        slurm_conn_id, tmp_path, script_path=str(script), environment={"STAGE": "eval"}, deferrable=False
    )
    ctx = task_context("slurm_it", run_id(), "envcheck")
    job_id = op.execute(ctx)
    info = SlurmHook(slurm_conn_id).get_job(job_id)
    env_lines = Path(info.stdout_path).read_text().splitlines()
    assert "STAGE=eval" in env_lines
    assert "SLURM_CPUS_PER_TASK=2" in env_lines
    assert not any("hunter2" in line or line.startswith("AIRFLOW_") for line in env_lines)
