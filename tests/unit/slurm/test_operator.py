from __future__ import annotations

import json
from datetime import timedelta

import pytest
from airflow.sdk import DAG
from nuro_ml.exceptions import SlurmJobError
from nuro_ml.hooks.slurm import SlurmHook, SlurmJobInfo
from nuro_ml.operators.slurm import SlurmJobOperator, job_comment, job_name
from nuro_ml.slurm.state import SlurmJobState
from nuro_ml.task_key import TaskKey

from tests.fixtures.slurm import task_context


def make_operator(**kwargs) -> SlurmJobOperator:
    kwargs.setdefault("task_id", "train")
    kwargs.setdefault("slurm_conn_id", None)
    if "script_path" not in kwargs:
        kwargs.setdefault("script", "echo hi")
    return SlurmJobOperator(**kwargs)


def finished(state: SlurmJobState, exit_code: int, stdout_path: str | None, **extra) -> dict:
    info = SlurmJobInfo(
        job_id="17",
        name="d.train.x",
        state=state,
        exit_code=exit_code,
        signal=0,
        stdout_path=stdout_path,
        **extra,
    )
    return {
        "status": "success" if state.is_success() else "failed",
        "job_id": "17",
        "message": info.describe(),
        "job": info.to_dict(),
    }


def test_needs_exactly_one_script_source():
    with pytest.raises(SlurmJobError, match="task train: give exactly one of script or script_path"):
        SlurmJobOperator(task_id="train")
    with pytest.raises(SlurmJobError, match="exactly one"):
        SlurmJobOperator(task_id="train", script="echo", script_path="/x.sh")


def test_rejects_negative_gpus_and_zero_poll_interval():
    with pytest.raises(SlurmJobError, match="gpus must be >= 0, got -1"):
        make_operator(gpus=-1)
    with pytest.raises(SlurmJobError, match="poll_interval must be > 0"):
        make_operator(poll_interval=0)


def test_deferrable_by_default():
    assert make_operator().deferrable is True


def test_task_key_names_and_comments():
    key = TaskKey("av pipeline", "manual__2024-01-01T00:00:00+00:00", "train", 3)
    assert job_comment(key) == "nuro-ml:av%20pipeline/manual__2024-01-01T00:00:00+00:00/train/3"
    assert job_name(key).startswith("av_pipeline.train.")
    assert " " not in job_name(key) and "|" not in job_comment(key)
    # Same task instance -> same name; another map index or run -> another name.
    assert job_name(key) == job_name(TaskKey("av pipeline", "manual__2024-01-01T00:00:00+00:00", "train", 3))
    assert job_name(key) != job_name(TaskKey("av pipeline", "manual__2024-01-01T00:00:00+00:00", "train", 4))
    assert job_name(key) != job_name(TaskKey("av pipeline", "scheduled__2024-01-02", "train", 3))
    assert "/" not in job_comment(TaskKey("a/b", "r", "t")).removeprefix("nuro-ml:").replace("/", "", 3)


def test_spec_defaults_come_from_the_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("NURO_ML_DATA_DIR", str(tmp_path))
    op = make_operator(gpus=1, time_limit=timedelta(minutes=5), environment={"STAGE": "a"})
    key = op.task_key(task_context("d", "r1", "train", map_index=2))
    spec = op.build_spec(key)
    assert spec.name == job_name(key)
    assert spec.comment == "nuro-ml:d/r1/train/2"
    assert spec.working_directory == str(tmp_path / "slurm")
    assert (tmp_path / "slurm").is_dir()
    assert spec.output_path == "%x-%j.out"
    assert (spec.gpus, spec.time_limit, dict(spec.environment)) == (1, timedelta(minutes=5), {"STAGE": "a"})


def test_explicit_job_name_keeps_the_task_key_in_the_comment():
    op = make_operator(job_name="nightly-train", working_directory="/scratch")
    spec = op.build_spec(TaskKey("d", "r", "train"))
    assert (spec.name, spec.comment, spec.working_directory) == (
        "nightly-train",
        "nuro-ml:d/r/train/-1",
        "/scratch",
    )


def test_templated_fields_render():
    with DAG("slurm_templates", schedule=None):
        op = make_operator(
            script="echo {{ ds }} > out-{{ run_id }}.txt",
            partition="{{ 'gpu' }}",
            environment={"RUN": "{{ run_id }}"},
            job_name="train-{{ ds }}",
        )
    op.render_template_fields(task_context("slurm_templates", "r7", "train"))
    assert op.script == "echo 2024-01-01 > out-r7.txt"
    assert op.partition == "gpu"
    assert op.environment == {"RUN": "r7"}
    assert op.job_name == "train-2024-01-01"
    for name in ("script", "script_path", "slurm_conn_id", "partition", "environment", "job_name"):
        assert name in SlurmJobOperator.template_fields


def test_execute_complete_success_returns_job_id_and_logs_tail(tmp_path, capsys):
    out = tmp_path / "job.out"
    out.write_text("epoch 1\nepoch 2\nsaved model\n")
    op = make_operator(log_tail_lines=2)
    result = op.execute_complete({}, finished(SlurmJobState.COMPLETED, 0, str(out)))
    assert result == "17"
    # The task log goes through structlog to stdout.
    logged = capsys.readouterr().out
    assert "epoch 2\nsaved model" in logged
    assert "epoch 1" not in logged


def test_execute_complete_failure_names_job_exit_code_and_log_tail(tmp_path):
    out = tmp_path / "job.out"
    out.write_text("loading\nTraceback (most recent call last):\nValueError: bad shard\n")
    op = make_operator(log_tail_lines=2)
    event = finished(SlurmJobState.FAILED, 3, str(out), reason="NonZeroExitCode")
    with pytest.raises(SlurmJobError) as err:
        op.execute_complete({}, event)
    message = str(err.value)
    assert message.startswith("Slurm job 17 (d.train.x) is FAILED with exit code 3, reason NonZeroExitCode;")
    assert message.endswith(
        f"last 2 lines of {out}:\nTraceback (most recent call last):\nValueError: bad shard"
    )
    assert "loading" not in message


def test_execute_complete_failure_when_log_is_not_on_this_worker(tmp_path):
    op = make_operator()
    event = finished(SlurmJobState.TIMEOUT, 0, str(tmp_path / "elsewhere.out"))
    with pytest.raises(SlurmJobError, match=r"is TIMEOUT.*elsewhere\.out is not readable from this worker"):
        op.execute_complete({}, event)


def test_execute_complete_error_event():
    op = make_operator()
    with pytest.raises(SlurmJobError, match="Slurm job 17: polling Slurm job 17 failed: boom"):
        op.execute_complete(
            {}, {"status": "error", "job_id": "17", "message": "polling Slurm job 17 failed: boom"}
        )


def test_on_kill_without_a_job_does_nothing():
    op = make_operator()
    op.on_kill()
    assert op._killed and op.job_id is None


class TestHookConnection:
    def test_extras_and_argument_precedence(self, monkeypatch, tmp_path):
        conf = tmp_path / "slurm.conf"
        conf.write_text("ClusterName=x\n")
        extra = {"slurm_conf": str(conf), "partition": "gpu", "account": "av"}
        monkeypatch.setenv("AIRFLOW_CONN_SLURM_UNIT", json.dumps({"conn_type": "slurm", "extra": extra}))
        hook = SlurmHook("slurm_unit")
        assert (hook.slurm_conf, hook.partition, hook.account) == (str(conf), "gpu", "av")
        hook = SlurmHook("slurm_unit", partition="debug")
        assert (hook.partition, hook.account) == ("debug", "av")

    def test_unknown_extra_is_named(self, monkeypatch):
        monkeypatch.setenv("AIRFLOW_CONN_SLURM_TYPO", '{"conn_type": "slurm", "extra": {"partiton": "gpu"}}')
        with pytest.raises(SlurmJobError, match=r"connection 'slurm_typo': unknown extra field.*partiton"):
            _ = SlurmHook("slurm_typo").partition

    def test_missing_slurm_conf_file_is_named(self, tmp_path):
        with pytest.raises(SlurmJobError, match=r"slurm\.conf .*nope\.conf .* does not exist"):
            _ = SlurmHook(None, slurm_conf=str(tmp_path / "nope.conf")).slurm_conf

    def test_missing_default_connection_means_local_config(self, monkeypatch):
        monkeypatch.delenv("AIRFLOW_CONN_SLURM_DEFAULT", raising=False)
        hook = SlurmHook()
        assert (hook.slurm_conf, hook.partition, hook.account) == (None, None, None)

    def test_missing_named_connection_is_an_error(self):
        from airflow.sdk.exceptions import AirflowNotFoundException

        with pytest.raises(AirflowNotFoundException):
            _ = SlurmHook("slurm_absent").slurm_conf


def test_execute_complete_with_log_tail_disabled(tmp_path):
    op = make_operator(log_tail_lines=0)
    event = finished(SlurmJobState.OUT_OF_MEMORY, 0, str(tmp_path / "job.out"))
    with pytest.raises(SlurmJobError) as err:
        op.execute_complete({}, event)
    assert str(err.value) == "Slurm job 17 (d.train.x) is OUT_OF_MEMORY with exit code 0"
