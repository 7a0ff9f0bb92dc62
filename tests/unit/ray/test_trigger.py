"""RayJobTrigger: serialisation, one event per run, failure statuses, errors with a stack trace."""

from __future__ import annotations

from unittest import mock

import pytest
from airflow.triggers.base import TriggerEvent
from nuro_ml.exceptions import RayJobError, RayJobNotFoundError
from nuro_ml.hooks.ray import AsyncRayHook, RayJobInfo, RayJobStatus
from nuro_ml.triggers.ray import RayJobTrigger

TRIGGER_PATH = "nuro_ml.triggers.ray.RayJobTrigger"
SUBMISSION_ID = "av_training_pipeline-train-0123456789ab"


@pytest.fixture
def trigger() -> RayJobTrigger:
    return RayJobTrigger(
        submission_id=SUBMISSION_ID,
        ray_conn_id="ray_test",
        address="http://127.0.0.1:8265",
        poll_interval=0.01,
    )


def info(status: RayJobStatus, message: str | None = None) -> RayJobInfo:
    return RayJobInfo(submission_id=SUBMISSION_ID, status=status, message=message, entrypoint="python t.py")


def test_serialize_lists_every_constructor_argument(trigger: RayJobTrigger) -> None:
    classpath, kwargs = trigger.serialize()
    assert classpath == TRIGGER_PATH
    assert kwargs == {
        "submission_id": SUBMISSION_ID,
        "ray_conn_id": "ray_test",
        "address": "http://127.0.0.1:8265",
        "poll_interval": 0.01,
        "yield_running_after": None,
        "log_offset": 0,
    }
    # The serialised form rebuilds an equal trigger (what the triggerer does).
    assert RayJobTrigger(**kwargs).serialize() == (classpath, kwargs)


async def test_success_yields_one_success_event(trigger: RayJobTrigger) -> None:
    done = info(RayJobStatus.SUCCEEDED)
    with mock.patch.object(AsyncRayHook, "get_job_info", return_value=done) as get_info:
        event = await trigger.run().asend(None)
    assert event == TriggerEvent(
        {
            "status": "success",
            "submission_id": SUBMISSION_ID,
            "job_status": "SUCCEEDED",
            "message": "Job finished successfully.",
            "job": done.to_dict(),
            "log_offset": 0,
        }
    )
    get_info.assert_awaited_once_with(SUBMISSION_ID)


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (RayJobStatus.FAILED, "Job entrypoint command failed with exit code 1"),
        (RayJobStatus.STOPPED, "Job was intentionally stopped."),
    ],
)
async def test_failure_statuses_yield_failed(
    trigger: RayJobTrigger, status: RayJobStatus, message: str
) -> None:
    with mock.patch.object(AsyncRayHook, "get_job_info", return_value=info(status, message)):
        event = await trigger.run().asend(None)
    assert event.payload["status"] == "failed"
    assert event.payload["job_status"] == status.value
    assert event.payload["message"] == message


async def test_polls_until_terminal_and_logs_each_poll(trigger: RayJobTrigger, capsys) -> None:
    # Airflow 3 task and trigger logs go through structlog to stdout.
    states = [info(RayJobStatus.PENDING), info(RayJobStatus.RUNNING), info(RayJobStatus.SUCCEEDED)]
    with mock.patch.object(AsyncRayHook, "get_job_info", side_effect=states) as get_info:
        event = await trigger.run().asend(None)
    assert event.payload["status"] == "success"
    assert get_info.await_count == 3
    out = capsys.readouterr().out
    assert f"Ray job {SUBMISSION_ID} is PENDING; checking again in 0.01 s" in out
    assert f"Ray job {SUBMISSION_ID} is RUNNING; checking again in 0.01 s" in out


async def test_running_event_when_it_is_time_to_stream_logs() -> None:
    trigger = RayJobTrigger(
        submission_id=SUBMISSION_ID, address="http://h:1", yield_running_after=0, log_offset=1234
    )
    with mock.patch.object(AsyncRayHook, "get_job_info", return_value=info(RayJobStatus.RUNNING)):
        event = await trigger.run().asend(None)
    assert event.payload["status"] == "running"
    assert event.payload["job_status"] == "RUNNING"
    assert event.payload["log_offset"] == 1234  # the task resumes printing where it stopped


async def test_api_error_becomes_error_event_with_stack_trace(trigger: RayJobTrigger) -> None:
    err = RayJobError("failed to get Ray job on http://127.0.0.1:8265: HTTP 500: boom")
    with mock.patch.object(AsyncRayHook, "get_job_info", side_effect=err) as get_info:
        event = await trigger.run().asend(None)
    payload = dict(event.payload)
    assert payload.pop("stack_trace").startswith("Traceback")
    assert payload == {
        "status": "error",
        "submission_id": SUBMISSION_ID,
        "message": f"RayJobError: {err}",
        "log_offset": 0,
    }
    assert get_info.await_count == 3  # transient server errors are retried before giving up


async def test_missing_job_is_not_retried(trigger: RayJobTrigger) -> None:
    with mock.patch.object(AsyncRayHook, "get_job_info", side_effect=RayJobNotFoundError("gone")) as get_info:
        event = await trigger.run().asend(None)
    assert event.payload["status"] == "error"
    assert "RayJobNotFoundError" in event.payload["message"]
    assert get_info.await_count == 1


async def test_on_kill_stops_the_job(trigger: RayJobTrigger) -> None:
    with mock.patch.object(AsyncRayHook, "stop_job", return_value=True) as stop:
        await trigger.on_kill()
    stop.assert_awaited_once_with(SUBMISSION_ID)


async def test_on_kill_logs_instead_of_raising(trigger: RayJobTrigger, capsys) -> None:
    with mock.patch.object(AsyncRayHook, "stop_job", side_effect=RayJobError("unreachable")):
        await trigger.on_kill()
    assert f"Failed to stop Ray job {SUBMISSION_ID}" in capsys.readouterr().out
