"""RayJobOperator: submission ids per task instance, re-attach rules, results, failures, deferral."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
from airflow.sdk.exceptions import TaskDeferred
from nuro_ml.exceptions import RayJobError
from nuro_ml.hooks.ray import RayJobInfo, RayJobStatus
from nuro_ml.operators.ray import (
    RUN_KEY_ENV,
    SUBMISSION_ID_ENV,
    RayJobOperator,
    derive_submission_id,
    parse_connection_ref,
    parse_result_line,
    retry_submission_id,
    submission_id_candidates,
)
from nuro_ml.task_key import TaskKey
from nuro_ml.triggers.ray import RayJobTrigger

from tests.unit.ray.stubs import FakeRayHook, TaskInstanceStub
from workloads.train_xgboost import result_line

RESULT = {"metrics": {"auc": 0.91, "logloss": 0.3}, "artifact_uri": "file:///tmp/model.ubj"}
OK_LOGS = "Running entrypoint\nepoch 1\nepoch 2\n" + result_line(RESULT) + "\n"


def identity(ti: TaskInstanceStub) -> str:
    return f"{ti.dag_id}/{ti.run_id}/{ti.task_id}/{ti.map_index}"


def base_id(ti: TaskInstanceStub) -> str:
    return derive_submission_id(
        TaskKey(dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id, map_index=ti.map_index)
    )


def make_operator(hook: FakeRayHook, **kwargs: object) -> RayJobOperator:
    kwargs.setdefault("deferrable", False)
    kwargs.setdefault("poll_interval", 0)
    op = RayJobOperator(task_id="train", entrypoint="python train_xgboost.py", **kwargs)  # type: ignore[arg-type]
    op.__dict__["hook"] = hook  # the operator's cached hook property
    return op


# -- submission ids ------------------------------------------------------------------------


def test_submission_id_is_stable_readable_and_keyed_by_the_task_instance() -> None:
    sid = derive_submission_id(
        TaskKey(dag_id="av_training_pipeline", run_id="manual__2026-11-24", task_id="train")
    )
    digest = hashlib.sha256(b"av_training_pipeline/manual__2026-11-24/train/-1").hexdigest()[:12]
    assert sid == f"av_training_pipeline-train-{digest}"
    assert sid == derive_submission_id(
        TaskKey(dag_id="av_training_pipeline", run_id="manual__2026-11-24", task_id="train")
    )
    others = {
        derive_submission_id(
            TaskKey(dag_id="av_training_pipeline", run_id="manual__2026-11-25", task_id="train")
        ),
        derive_submission_id(
            TaskKey(dag_id="av_training_pipeline", run_id="manual__2026-11-24", task_id="eval")
        ),
        derive_submission_id(
            TaskKey(dag_id="av_training_pipeline", run_id="manual__2026-11-24", task_id="train", map_index=0)
        ),
        derive_submission_id(
            TaskKey(dag_id="av_training_pipeline", run_id="manual__2026-11-24", task_id="train", map_index=1)
        ),
    }
    assert sid not in others and len(others) == 4


def test_submission_id_is_sanitized_and_bounded() -> None:
    sid = derive_submission_id(
        TaskKey(
            dag_id="Team A: Träining/DAG" + "x" * 200, run_id="r", task_id="task.group.train", map_index=3
        )
    )
    assert re.fullmatch(r"[a-z0-9_-]+", sid)
    assert len(sid) <= 64 + 1 + 12
    assert sid.startswith("team-a-tr-ining-dag")


def test_retry_ids() -> None:
    assert retry_submission_id("b", 1) == "b"
    assert retry_submission_id("b", 3) == "b-try3"
    assert submission_id_candidates("b", 3) == ["b", "b-try2", "b-try3"]
    assert submission_id_candidates("b", 1) == ["b"]


# -- result lines ----------------------------------------------------------------------------


def test_last_result_line_wins() -> None:
    logs = f"{result_line({'metrics': {'auc': 0.5}})}\nmore output\n{result_line(RESULT)}\ntrailing line\n"
    assert parse_result_line(logs) == RESULT


def test_result_line_from_a_ray_actor_with_colour_codes() -> None:
    logs = "\x1b[36m(RayTrainWorker pid=123, ip=10.0.0.2)\x1b[0m " + result_line(RESULT) + "\r\n"
    assert parse_result_line(logs) == RESULT


def test_no_result_line() -> None:
    assert parse_result_line("hello\nNURO_ML_RESULT_X {}\nsome NURO_ML_RESULT {} inside text\n") is None


def test_malformed_result_line_is_an_error() -> None:
    with pytest.raises(
        RayJobError, match=r'malformed NURO_ML_RESULT line .*NURO_ML_RESULT \{"metrics": \{"auc"'
    ):
        parse_result_line('ok\nNURO_ML_RESULT {"metrics": {"auc": 0.9}\n')


def test_connection_refs() -> None:
    assert parse_connection_ref("aws_default") == ("aws_default", "password")
    assert parse_connection_ref("aws_default:login") == ("aws_default", "login")
    assert parse_connection_ref("wandb:extra.api_key") == ("wandb", "extra.api_key")
    assert parse_connection_ref("odd:conn:id") == ("odd:conn:id", "password")


# -- submit or re-attach --------------------------------------------------------------------


def test_first_try_submits_under_the_base_id_and_returns_the_result(capsys) -> None:
    hook, ti = FakeRayHook(), TaskInstanceStub()
    sid = base_id(ti)
    hook.script[sid] = [
        (RayJobStatus.RUNNING, "Running entrypoint\nepoch 1\nep"),
        (RayJobStatus.RUNNING, "Running entrypoint\nepoch 1\nepoch 2\n"),
        (RayJobStatus.SUCCEEDED, OK_LOGS),
    ]
    op = make_operator(
        hook,
        runtime_env={"working_dir": "/repo/workloads", "env_vars": {"NURO_ML_DATA_DIR": "/data"}},
        metadata={"team": "perception"},
        entrypoint_num_cpus=1,
    )
    result = op.execute({"ti": ti})

    assert hook.submitted == [sid]
    assert result == {**RESULT, "submission_id": sid, "status": "SUCCEEDED", "job_url": hook.job_url(sid)}
    job = hook.jobs[sid]
    assert job.info.metadata == {
        "team": "perception",
        "nuro_ml_task_instance": identity(ti),
        "airflow_try_number": "1",
    }
    assert job.runtime_env == {
        "working_dir": "/repo/workloads",
        "env_vars": {"NURO_ML_DATA_DIR": "/data", SUBMISSION_ID_ENV: sid, RUN_KEY_ENV: sid},
    }
    assert ti.xcom == {"ray_submission_id": sid, "ray_job_url": f"http://ray-head.test:8265/#/jobs/{sid}"}
    out = capsys.readouterr().out
    # Every job log line reached the task log exactly once, the partial line only once complete.
    for line in ("Running entrypoint", "epoch 1", "epoch 2", "NURO_ML_RESULT"):
        assert out.count(f"[ray] {line}") == 1, line


def test_fresh_operator_for_the_same_try_reattaches_to_the_running_job() -> None:
    hook, ti = FakeRayHook(), TaskInstanceStub()
    sid = base_id(ti)
    hook.add(sid, RayJobStatus.RUNNING, nuro_ml_task_instance=identity(ti), airflow_try_number="1")
    hook.script[sid] = [(RayJobStatus.RUNNING, "a\n"), (RayJobStatus.SUCCEEDED, OK_LOGS)]
    result = make_operator(hook).execute({"ti": ti})
    assert hook.submitted == []
    assert result["metrics"] == RESULT["metrics"]


def test_retry_after_worker_death_reuses_a_succeeded_job() -> None:
    hook, ti = FakeRayHook(), TaskInstanceStub(try_number=2)
    sid = base_id(ti)
    hook.add(
        sid, RayJobStatus.SUCCEEDED, logs=OK_LOGS, nuro_ml_task_instance=identity(ti), airflow_try_number="1"
    )
    result = make_operator(hook).execute({"ti": ti})
    assert hook.submitted == []
    assert result["submission_id"] == sid


@pytest.mark.parametrize("status", [RayJobStatus.FAILED, RayJobStatus.STOPPED])
def test_retry_after_an_unsuccessful_job_submits_with_a_try_suffix(status: RayJobStatus) -> None:
    hook, ti = FakeRayHook(), TaskInstanceStub(try_number=3)
    sid = base_id(ti)
    hook.add(sid, RayJobStatus.FAILED, nuro_ml_task_instance=identity(ti), airflow_try_number="1")
    hook.add(f"{sid}-try2", status, nuro_ml_task_instance=identity(ti), airflow_try_number="2")
    hook.script[f"{sid}-try3"] = [(RayJobStatus.SUCCEEDED, OK_LOGS)]
    result = make_operator(hook).execute({"ti": ti})
    assert hook.submitted == [f"{sid}-try3"]
    assert result["submission_id"] == f"{sid}-try3"
    assert hook.jobs[f"{sid}-try3"].runtime_env["env_vars"][RUN_KEY_ENV] == sid


@pytest.mark.parametrize("status", [RayJobStatus.FAILED, RayJobStatus.STOPPED])
def test_job_that_ended_unsuccessfully_in_this_try_fails_the_task_with_its_log_tail(
    status: RayJobStatus,
) -> None:
    hook, ti = FakeRayHook(), TaskInstanceStub(try_number=2)
    sid = base_id(ti)
    logs = "".join(f"line {i}\n" for i in range(100)) + "ValueError: bad feature column\n"
    hook.add(sid, RayJobStatus.FAILED, nuro_ml_task_instance=identity(ti), airflow_try_number="1")
    hook.add(f"{sid}-try2", status, logs=logs, nuro_ml_task_instance=identity(ti), airflow_try_number="2")
    with pytest.raises(RayJobError) as err:
        make_operator(hook, log_tail_lines=5).execute({"ti": ti})
    assert hook.submitted == []
    message = str(err.value)
    assert f"Ray job {sid}-try2 {status.value}" in message
    assert message.endswith("line 96\nline 97\nline 98\nline 99\nValueError: bad feature column")
    assert "line 95" not in message


def test_never_adopts_a_job_of_another_task_instance() -> None:
    hook, ti = FakeRayHook(), TaskInstanceStub()
    hook.add(base_id(ti), RayJobStatus.RUNNING, nuro_ml_task_instance="other_dag/run/train/-1")
    with pytest.raises(RayJobError, match="belongs to other_dag/run/train/-1, not to task instance"):
        make_operator(hook).execute({"ti": ti})
    assert hook.submitted == []


def test_concurrent_submission_of_the_same_id_is_adopted() -> None:
    hook, ti = FakeRayHook(), TaskInstanceStub()
    sid = base_id(ti)

    def racing_submit(**kwargs: object) -> str:
        hook.add(sid, RayJobStatus.RUNNING, nuro_ml_task_instance=identity(ti), airflow_try_number="1")
        hook.script[sid] = [(RayJobStatus.SUCCEEDED, OK_LOGS)]
        raise RayJobError("Job with submission_id already exists")

    hook.submit_job = racing_submit  # type: ignore[method-assign]
    assert make_operator(hook).execute({"ti": ti})["status"] == "SUCCEEDED"


def test_secrets_from_connections_reach_the_job_but_not_the_log(monkeypatch, capsys) -> None:
    secret = "wandb-key-only-in-this-test-91c2"
    monkeypatch.setenv(
        "AIRFLOW_CONN_WANDB_UNIT", json.dumps({"conn_type": "http", "password": secret, "login": "ml-bot"})
    )
    hook, ti = FakeRayHook(), TaskInstanceStub()
    sid = base_id(ti)
    hook.script[sid] = [(RayJobStatus.SUCCEEDED, OK_LOGS)]
    op = make_operator(
        hook, env_from_connections={"WANDB_API_KEY": "wandb_unit", "WANDB_USER": "wandb_unit:login"}
    )
    result = op.execute({"ti": ti})
    env = hook.jobs[sid].runtime_env["env_vars"]
    assert env["WANDB_API_KEY"] == secret and env["WANDB_USER"] == "ml-bot"
    assert secret not in capsys.readouterr().out
    assert secret not in json.dumps(result) and secret not in json.dumps(ti.xcom)


def test_missing_connection_field_is_named(monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_NOPASS_UNIT", json.dumps({"conn_type": "http", "login": "x"}))
    op = make_operator(FakeRayHook(), env_from_connections={"TOKEN": "nopass_unit"})
    with pytest.raises(
        RayJobError, match=r"env_from_connections\['TOKEN'\]: connection 'nopass_unit' has no password"
    ):
        op.execute({"ti": TaskInstanceStub()})


def test_on_kill_stops_the_job() -> None:
    hook, ti = FakeRayHook(), TaskInstanceStub()
    sid = base_id(ti)
    op = make_operator(hook, deferrable=True)
    with pytest.raises(TaskDeferred):
        op.execute({"ti": ti})
    op.on_kill()
    assert hook.stopped == [sid]
    assert hook.jobs[sid].info.status is RayJobStatus.STOPPED


def test_on_kill_before_submission_does_nothing() -> None:
    hook = FakeRayHook()
    make_operator(hook).on_kill()
    assert hook.stopped == []


# -- deferrable ------------------------------------------------------------------------------


def test_defers_with_the_trigger_after_pushing_ids() -> None:
    hook, ti = FakeRayHook(), TaskInstanceStub()
    sid = base_id(ti)
    op = make_operator(
        hook,
        deferrable=True,
        address="http://ray-head.test:8265",
        ray_conn_id=None,
        poll_interval=3,
        log_stream_interval=60,
    )
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({"ti": ti})
    trigger = deferred.value.trigger
    assert isinstance(trigger, RayJobTrigger)
    assert trigger.serialize()[1] == {
        "submission_id": sid,
        "ray_conn_id": None,
        "address": "http://ray-head.test:8265",
        "poll_interval": 3,
        "yield_running_after": 60,
        "log_offset": 0,
    }
    assert deferred.value.method_name == "execute_complete"
    assert deferred.value.kwargs == {"submission_id": sid, "log_offset": 0}
    assert ti.xcom["ray_submission_id"] == sid
    assert ti.xcom["ray_job_url"] == hook.job_url(sid)


def test_already_finished_job_does_not_defer() -> None:
    hook, ti = FakeRayHook(), TaskInstanceStub(try_number=2)
    sid = base_id(ti)
    hook.add(
        sid, RayJobStatus.SUCCEEDED, logs=OK_LOGS, nuro_ml_task_instance=identity(ti), airflow_try_number="1"
    )
    assert make_operator(hook, deferrable=True).execute({"ti": ti})["metrics"] == RESULT["metrics"]


def event(status: str, job_status: RayJobStatus, sid: str) -> dict[str, object]:
    info = RayJobInfo(submission_id=sid, status=job_status)
    return {
        "status": status,
        "submission_id": sid,
        "job_status": job_status.value,
        "message": info.message,
        "job": info.to_dict(),
    }


def test_execute_complete_success_returns_the_result() -> None:
    hook = FakeRayHook()
    hook.add("job-1", RayJobStatus.SUCCEEDED, logs=OK_LOGS)
    result = make_operator(hook).execute_complete({}, event("success", RayJobStatus.SUCCEEDED, "job-1"))
    assert result == {
        **RESULT,
        "submission_id": "job-1",
        "status": "SUCCEEDED",
        "job_url": hook.job_url("job-1"),
    }


@pytest.mark.parametrize("job_status", [RayJobStatus.FAILED, RayJobStatus.STOPPED])
def test_execute_complete_failure_raises_with_log_tail(job_status: RayJobStatus) -> None:
    hook = FakeRayHook()
    hook.add("job-1", job_status, logs="step 1\nTraceback (most recent call last):\nKeyError: 'hard_brake'\n")
    with pytest.raises(RayJobError) as err:
        make_operator(hook).execute_complete({}, event("failed", job_status, "job-1"))
    assert f"Ray job job-1 {job_status.value}" in str(err.value)
    assert str(err.value).endswith("KeyError: 'hard_brake'")


def test_execute_complete_error_event_raises() -> None:
    hook = FakeRayHook()
    with pytest.raises(RayJobError, match=r"lost track of Ray job job-1 .*connection refused"):
        make_operator(hook).execute_complete(
            {},
            {
                "status": "error",
                "submission_id": "job-1",
                "message": "connection refused",
                "stack_trace": "Traceback ...",
            },
        )


def test_running_event_prints_new_lines_and_defers_again(capsys) -> None:
    hook = FakeRayHook()
    hook.add("job-1", RayJobStatus.RUNNING, logs="first\nsecond\nthi")
    op = make_operator(hook, deferrable=True, log_stream_interval=30)
    running = {**event("running", RayJobStatus.RUNNING, "job-1"), "log_offset": len("first\n")}
    with pytest.raises(TaskDeferred) as deferred:
        op.execute_complete({}, running)
    offset = len("first\nsecond\n")
    assert deferred.value.kwargs == {"submission_id": "job-1", "log_offset": offset}
    assert deferred.value.trigger.log_offset == offset
    out = capsys.readouterr().out
    assert "[ray] second" in out and "[ray] first" not in out and "[ray] thi" not in out

    hook.set_status("job-1", RayJobStatus.SUCCEEDED, logs="first\nsecond\nthird\n" + result_line(RESULT))
    # Resumed with the event only (as ``airflow dags test`` does): the offset comes from the event.
    final = {**event("success", RayJobStatus.SUCCEEDED, "job-1"), "log_offset": offset}
    assert op.execute_complete({}, final)["metrics"] == RESULT["metrics"]
    out = capsys.readouterr().out
    assert "[ray] third" in out and "[ray] second" not in out


def test_templated_fields() -> None:
    assert set(RayJobOperator.template_fields) == {
        "entrypoint",
        "runtime_env",
        "env_from_connections",
        "submission_id",
        "metadata",
        "entrypoint_resources",
        "ray_conn_id",
        "address",
        "lease_task_id",
    }
