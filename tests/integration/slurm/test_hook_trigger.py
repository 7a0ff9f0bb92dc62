"""SlurmHook, AsyncSlurmHook and SlurmJobTrigger against the real local Slurm."""

from __future__ import annotations

import asyncio

import pytest
from nuro_ml.exceptions import SlurmCommandError, SlurmJobError
from nuro_ml.hooks.slurm import AsyncSlurmHook, SlurmHook, SlurmJobSpec
from nuro_ml.slurm.state import SlurmJobState
from nuro_ml.triggers.slurm import SlurmJobTrigger

from tests.polling import await_for

pytestmark = pytest.mark.integration


def submit(conn_id: str, tmp_path, script: str, **kwargs) -> str:
    spec = SlurmJobSpec(script=script, working_directory=str(tmp_path), output_path="%x-%j.out", **kwargs)
    return SlurmHook(conn_id).submit_job(spec)


async def wait_running(hook: AsyncSlurmHook, job_id: str) -> None:
    for _ in range(600):
        state = (await hook.get_job(job_id)).state
        if state is SlurmJobState.RUNNING:
            return
        assert not state.is_terminal(), f"job {job_id} ended {state} before running"
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} never started")


def test_submission_errors_name_the_problem(slurm, slurm_conn_id, tmp_path):
    with pytest.raises(SlurmCommandError, match="Invalid partition name specified") as err:
        submit(slurm_conn_id, tmp_path, "echo hi", name="bad", partition="no-such-partition")
    assert err.value.argv[0] == "sbatch"
    assert err.value.returncode == 1


def test_unknown_job(slurm, slurm_conn_id):
    hook = SlurmHook(slurm_conn_id)
    assert hook.find_job("999999") is None
    assert hook.accounting_enabled is False
    with pytest.raises(SlurmJobError, match="Slurm job 999999 is not known to slurmctld"):
        hook.get_job("999999")


def test_lookup_by_name_filters_on_comment(slurm, slurm_conn_id, tmp_path):
    a = submit(slurm_conn_id, tmp_path, "sleep 30", name="lookup", comment="nuro-ml:d/r/t/-1")
    b = submit(slurm_conn_id, tmp_path, "sleep 30", name="lookup", comment="nuro-ml:d/r/t/0")
    c = submit(slurm_conn_id, tmp_path, "sleep 30", name="lookup", comment="nuro-ml:d/r/t/-1")
    hook = SlurmHook(slurm_conn_id)
    assert [j.job_id for j in hook.find_jobs_by_name("lookup", "nuro-ml:d/r/t/-1")] == [a, c]
    assert [j.job_id for j in hook.find_jobs_by_name("lookup")] == [a, b, c]
    assert hook.find_jobs_by_name("lookup", "nuro-ml:other") == []


async def test_trigger_fires_success_for_a_finished_job(slurm, slurm_conn_id, tmp_path):
    job_id = await asyncio.to_thread(submit, slurm_conn_id, tmp_path, "echo done", name="trig-ok")
    trigger = SlurmJobTrigger(job_id=job_id, slurm_conn_id=slurm_conn_id, poll_interval=0.2)
    event = await trigger.run().asend(None)
    job = event.payload.pop("job")
    assert event.payload == {
        "status": "success",
        "job_id": job_id,
        "message": f"Slurm job {job_id} (trig-ok) is COMPLETED with exit code 0",
    }
    assert job["state"] == "COMPLETED"
    assert job["stdout_path"] == str(tmp_path / f"trig-ok-{job_id}.out")


async def test_trigger_fires_failed_with_exit_code(slurm, slurm_conn_id, tmp_path):
    job_id = await asyncio.to_thread(submit, slurm_conn_id, tmp_path, "exit 7", name="trig-fail")
    event = (
        await SlurmJobTrigger(job_id=job_id, slurm_conn_id=slurm_conn_id, poll_interval=0.2).run().asend(None)
    )
    assert event.payload["status"] == "failed"
    assert event.payload["job"]["exit_code"] == 7
    assert (
        event.payload["message"]
        == f"Slurm job {job_id} (trig-fail) is FAILED with exit code 7, reason NonZeroExitCode"
    )


async def test_trigger_reports_an_unknown_job(slurm, slurm_conn_id):
    event = await SlurmJobTrigger(job_id="999999", slurm_conn_id=slurm_conn_id).run().asend(None)
    assert event.payload == {
        "status": "error",
        "job_id": "999999",
        "message": "Slurm job 999999 is not known to slurmctld or accounting",
    }


async def test_trigger_on_kill_cancels_the_job(slurm, slurm_conn_id, tmp_path, capsys):
    job_id = await asyncio.to_thread(submit, slurm_conn_id, tmp_path, "sleep 120", name="trig-kill", gpus=1)
    hook = AsyncSlurmHook(slurm_conn_id)
    await wait_running(hook, job_id)
    trigger = SlurmJobTrigger(job_id=job_id, slurm_conn_id=slurm_conn_id, poll_interval=0.2)
    waiting = asyncio.ensure_future(trigger.run().asend(None))
    # Killed while it waits, once it has seen the job running: its log says so (the trigger's
    # structlog logger writes to stdout).
    out: list[str] = []

    def saw_running() -> bool:
        out.append(capsys.readouterr().out)
        return f"Slurm job {job_id} (trig-kill) is RUNNING" in "".join(out)

    await await_for(saw_running, "the trigger to see the job running")
    assert not waiting.done()
    await trigger.on_kill()
    event = await asyncio.wait_for(waiting, timeout=60)
    assert event.payload["status"] == "failed"
    assert event.payload["job"]["state"] == "CANCELLED"
    assert (await hook.get_job(job_id)).state is SlurmJobState.CANCELLED


async def test_trigger_without_cancel_on_kill_leaves_the_job(slurm, slurm_conn_id, tmp_path):
    job_id = await asyncio.to_thread(submit, slurm_conn_id, tmp_path, "sleep 120", name="trig-keep")
    hook = AsyncSlurmHook(slurm_conn_id)
    await wait_running(hook, job_id)
    await SlurmJobTrigger(job_id=job_id, slurm_conn_id=slurm_conn_id, cancel_on_kill=False).on_kill()
    assert (await hook.get_job(job_id)).state is SlurmJobState.RUNNING
