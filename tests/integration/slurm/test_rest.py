"""The same hooks, operator and back end through slurmrestd (unix socket) instead of the CLI."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from airflow.sdk.exceptions import TaskDeferred
from nuro_ml.capacity.backends import load_backend
from nuro_ml.exceptions import SlurmCommandError
from nuro_ml.hooks.slurm import AsyncSlurmHook, SlurmHook, SlurmJobSpec
from nuro_ml.operators.slurm import XCOM_JOB_ID, SlurmJobOperator
from nuro_ml.slurm.state import SlurmJobState

from tests.fixtures.slurm import task_context

pytestmark = pytest.mark.integration


def wait_for(hook: SlurmHook, job_id: str, *states: SlurmJobState):
    deadline = time.monotonic() + 60
    while (info := hook.get_job(job_id)).state not in states:
        assert time.monotonic() < deadline, f"job {job_id} stuck in {info.state}"
        time.sleep(0.1)
    return info


def test_submit_and_read_a_failing_job(slurm, slurm_rest_conn_id, tmp_path):
    hook = SlurmHook(slurm_rest_conn_id)
    assert hook.rest is not None and hook.slurm_conf is None
    spec = SlurmJobSpec(
        script="echo gpus=$CUDA_VISIBLE_DEVICES stage=$STAGE\necho 'disk full' >&2\nexit 5\n",
        name="rest-fail",
        comment="nuro-ml:d/r/rest/-1",
        gpus=1,
        cpus_per_task=2,
        memory="100M",
        time_limit=timedelta(minutes=5),
        environment={"STAGE": "rest"},
        working_directory=str(tmp_path),
        output_path="%x-%j.out",
    )
    job_id = hook.submit_job(spec)
    info = wait_for(hook, job_id, SlurmJobState.FAILED)
    assert (info.exit_code, info.signal, info.reason) == (5, 0, "NonZeroExitCode")
    assert info.comment == "nuro-ml:d/r/rest/-1"
    assert info.stdout_path == str(tmp_path / f"rest-fail-{job_id}.out")
    assert hook.read_output_tail(info, 5) == ["gpus=0 stage=rest", "disk full"]
    # What slurmctld recorded for the request, read back through the CLI.
    fields = slurm.run("scontrol", "show", "job", "-o", job_id)
    assert "CPUs/Task=2" in fields and "TimeLimit=00:05:00" in fields and "TresPerNode=gres:gpu:1" in fields


def test_lookup_cancel_and_unknown_jobs(slurm, slurm_rest_conn_id, tmp_path):
    hook = SlurmHook(slurm_rest_conn_id)
    spec = SlurmJobSpec(script="sleep 120", name="rest-lookup", working_directory=str(tmp_path))
    first = hook.submit_job(replace(spec, comment="nuro-ml:a"))
    hook.submit_job(replace(spec, comment="nuro-ml:b"))
    third = hook.submit_job(replace(spec, comment="nuro-ml:a"))
    assert [j.job_id for j in hook.find_jobs_by_name("rest-lookup", "nuro-ml:a")] == [first, third]
    wait_for(hook, first, SlurmJobState.RUNNING)
    hook.cancel_job(first)
    info = wait_for(hook, first, SlurmJobState.CANCELLED)
    # scancel sends SIGTERM to the batch step: Slurm reports either the shell killed by it
    # (signal 15) or the shell exiting with 128 + 15 after its `sleep` was killed first.
    assert (info.exit_code, info.signal) in {(0, 15), (143, 0)}
    assert hook.find_job("999999") is None
    hook.cancel_job("999999")


def test_rejected_submission_names_the_reason(slurm, slurm_rest_conn_id, tmp_path):
    spec = SlurmJobSpec(script="true", name="rest-bad", partition="nope", working_directory=str(tmp_path))
    with pytest.raises(SlurmCommandError, match="returned HTTP 500: Invalid partition name specified") as err:
        SlurmHook(slurm_rest_conn_id).submit_job(spec)
    assert err.value.argv == ["POST", "/slurm/v0.0.38/job/submit"]


async def test_operator_deferrable_run_through_slurmrestd(slurm, slurm_rest_conn_id, tmp_path):
    ctx = task_context("slurm_rest_it", f"manual__{uuid.uuid4().hex[:8]}", "train")
    op = SlurmJobOperator(
        task_id="train",
        slurm_conn_id=slurm_rest_conn_id,
        script="sleep 1; echo trained on $CUDA_VISIBLE_DEVICES",
        gpus=2,
        working_directory=str(tmp_path),
        poll_interval=0.2,
    )
    with pytest.raises(TaskDeferred) as deferred:
        await asyncio.to_thread(op.execute, ctx)
    job_id = ctx["ti"].xcoms[XCOM_JOB_ID]

    # A retry finds the same job through slurmrestd's job list.
    retry_ctx = task_context("slurm_rest_it", ctx["run_id"], "train", try_number=2)
    with pytest.raises(TaskDeferred):
        await asyncio.to_thread(op.execute, retry_ctx)
    assert retry_ctx["ti"].xcoms[XCOM_JOB_ID] == job_id

    event = await deferred.value.trigger.run().asend(None)
    assert event.payload["status"] == "success"
    assert await asyncio.to_thread(op.execute_complete, ctx, event.payload) == job_id
    info = await AsyncSlurmHook(slurm_rest_conn_id).get_job(job_id)
    assert Path(info.stdout_path).read_text() == "trained on 0,1\n"


async def test_backend_through_slurmrestd(slurm, slurm_rest_conn_id, tmp_path):
    backend = load_backend({"type": "slurm", "conn_id": slurm_rest_conn_id})
    assert [(p.pool, p.total_gpus, p.free_gpus) for p in await backend.aget_capacity()] == [("debug", 4, 4)]
    hook = SlurmHook(slurm_rest_conn_id)
    job_id = hook.submit_job(
        SlurmJobSpec(script="sleep 120", name="rest-hog", gpus=3, working_directory=str(tmp_path))
    )
    wait_for(hook, job_id, SlurmJobState.RUNNING)
    assert [(p.pool, p.total_gpus, p.free_gpus) for p in backend.get_capacity()] == [("debug", 4, 1)]
