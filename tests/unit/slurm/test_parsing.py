"""Parsing of real Slurm 22.05 command output (captured files, see data/SOURCE.md)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from nuro_ml.exceptions import SlurmJobError
from nuro_ml.hooks.slurm import SlurmJobSpec
from nuro_ml.slurm.cli import build_sbatch_args
from nuro_ml.slurm.output import tail_lines
from nuro_ml.slurm.parsing import (
    job_id_sort_key,
    parse_exit_code,
    parse_gres,
    parse_sacct_jobs,
    parse_sbatch_parsable,
    parse_scontrol_jobs,
    parse_scontrol_record,
    parse_sinfo_nodes,
    parse_squeue_lookup,
)
from nuro_ml.slurm.state import SlurmJobState, node_state_accepts_jobs
from nuro_ml.slurm.submit import batch_script_text, format_time_limit, job_environment

DATA = Path(__file__).parent / "data"


def captured(name: str) -> str:
    return (DATA / name).read_text()


def test_running_job_with_comment_and_gres():
    (job,) = parse_scontrol_jobs(captured("scontrol_job_running.txt"))
    assert job.job_id == "6"
    assert job.name == "gpu3"
    assert job.state is SlurmJobState.RUNNING
    assert not job.is_terminal
    # A running job prints ExitCode=0:0, which is not a result yet.
    assert (job.exit_code, job.signal) == (None, None)
    assert job.comment == "nuro-ml:etl/manual__2024-01-01T00:00:00+00:00/train/-1"
    assert job.partition == "debug"
    assert job.nodes == "vm"
    assert job.stdout_path == "/tmp/sj/gpu3-6.out"
    assert job.work_dir == "/tmp/sj"
    assert job.reason is None


def test_pending_job_reports_reason_and_no_nodes():
    (job,) = parse_scontrol_jobs(captured("scontrol_job_pending.txt"))
    assert job.state is SlurmJobState.PENDING
    assert job.reason == "Resources"
    assert job.nodes is None
    assert job.comment is None
    assert job.describe() == "Slurm job 7 (gpu2) is PENDING, reason Resources"


def test_failed_job_exit_code_and_reason():
    (job,) = parse_scontrol_jobs(captured("scontrol_job_failed.txt"))
    assert job.state is SlurmJobState.FAILED
    assert job.is_terminal and not job.state.is_success()
    assert (job.exit_code, job.signal) == (3, 0)
    assert job.reason == "NonZeroExitCode"
    assert job.stdout_path == "/tmp/sj/fails-9.out"
    assert job.describe() == "Slurm job 9 (fails) is FAILED with exit code 3, reason NonZeroExitCode"


def test_cancelled_job_carries_the_signal():
    (job,) = parse_scontrol_jobs(captured("scontrol_job_cancelled.txt"))
    assert job.state is SlurmJobState.CANCELLED
    assert (job.exit_code, job.signal) == (0, 15)
    assert "signal 15" in job.describe()


def test_completed_job():
    (job,) = parse_scontrol_jobs(captured("scontrol_job_completed.txt"))
    assert job.state is SlurmJobState.COMPLETED
    assert job.state.is_success()
    assert (job.exit_code, job.signal) == (0, 0)


def test_scontrol_record_keeps_values_with_equals_and_odd_keys():
    fields = parse_scontrol_record(captured("scontrol_job_running.txt").strip())
    assert fields["TRES"] == "cpu=1,node=1,billing=1"
    assert fields["AllocNode:Sid"] == "localhost:3257"
    assert fields["CPUs/Task"] == "1"
    assert fields["ReqB:S:C:T"] == "0:0:*:*"
    assert fields["Power"] == ""
    assert fields["TresPerNode"] == "gres:gpu:3"


def test_job_info_round_trips_through_a_trigger_event_dict():
    (job,) = parse_scontrol_jobs(captured("scontrol_job_failed.txt"))
    data = job.to_dict()
    assert data["state"] == "FAILED"
    assert type(job).from_dict(data) == job


def test_unknown_job_message_is_what_the_hook_checks_for():
    from nuro_ml.exceptions import SlurmCommandError
    from nuro_ml.slurm.errors import is_unknown_job
    from nuro_ml.slurm.parsing import INVALID_JOB_TEXT

    stderr = captured("scontrol_job_unknown.stderr.txt")
    assert INVALID_JOB_TEXT in stderr
    assert is_unknown_job(SlurmCommandError(["scontrol", "show", "job"], 1, stderr))
    assert not is_unknown_job(
        SlurmCommandError(["scontrol", "show", "job"], 1, "Unable to contact slurm controller")
    )


def test_sbatch_parsable():
    assert parse_sbatch_parsable(captured("sbatch_parsable.txt")) == "12"
    assert parse_sbatch_parsable("42;cluster-a\n") == "42"
    with pytest.raises(SlurmJobError, match="did not print a job id"):
        parse_sbatch_parsable("Submitted batch job 12\n")


def test_squeue_lookup_rows():
    rows = parse_squeue_lookup(captured("squeue_lookup.txt"))
    assert rows == [("13", "nuro-ml:d/r/t/0"), ("14", None), ("15", "nuro-ml:d/r/t/0")]


def test_sinfo_idle_node():
    (node,) = parse_sinfo_nodes(captured("sinfo_idle.txt"))
    assert node.node == "vm"
    assert node.partition == "debug"
    assert node.is_default_partition
    assert node.accepts_jobs
    assert node.cpus_idle == 8
    assert node.count() == 4
    assert node.count(used=True) == 0


def test_sinfo_node_with_gpu_job():
    (node,) = parse_sinfo_nodes(captured("sinfo_mixed.txt"))
    assert node.state == "mixed"
    assert (node.count(), node.count(used=True), node.cpus_idle) == (4, 3, 7)


def test_sinfo_node_with_all_cpus_allocated():
    (node,) = parse_sinfo_nodes(captured("sinfo_allocated.txt"))
    assert node.state == "allocated"
    assert (node.count(), node.count(used=True), node.cpus_idle) == (4, 1, 0)


def test_sinfo_drained_node_takes_no_jobs():
    (node,) = parse_sinfo_nodes(captured("sinfo_drained.txt"))
    assert node.state == "drained"
    assert not node.accepts_jobs


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("gpu:4", {("gpu", None): 4}),
        ("gpu:0", {("gpu", None): 0}),
        ("(null)", {}),
        ("", {}),
        ("gpu:3(IDX:0-2)", {("gpu", None): 3}),
        ("gpu:a100:2(S:0-1),gpu:v100:1(S:0)", {("gpu", "a100"): 2, ("gpu", "v100"): 1}),
        ("gpu:a100:1(IDX:0,2),shard:8(IDX:0)", {("gpu", "a100"): 1, ("shard", None): 8}),
        ("gpu:tesla", {("gpu", "tesla"): 1}),
    ],
)
def test_parse_gres(raw, expected):
    assert parse_gres(raw) == expected


@pytest.mark.parametrize(
    ("state", "accepts"),
    [
        ("idle", True),
        ("mixed", True),
        ("allocated", True),
        ("completing", True),
        ("idle~", True),
        ("mixed-", True),
        ("idle*", False),
        ("down*", False),
        ("drained", False),
        ("draining", False),
        ("inval", False),
        ("maint", False),
        ("idle$", False),
        ("idle@", False),
        ("fail", False),
    ],
)
def test_node_states(state, accepts):
    assert node_state_accepts_jobs(state) is accepts


def test_sacct_parsable_rows():
    # Shape of `sacct -X -n -P -o JobID,JobName,State,ExitCode,Reason,Partition,NodeList,WorkDir,Comment`
    # (accounting is off on the local test cluster, so this sample follows sacct(1)).
    text = (
        "41|train|CANCELLED by 0|0:15|None|gpu|n01|/home/u|nuro-ml:d/r/t/-1\n"
        "42|etl|COMPLETED|0:0|None|cpu|n02|/tmp|\n"
    )
    cancelled, done = parse_sacct_jobs(text)
    assert cancelled.state is SlurmJobState.CANCELLED
    assert (cancelled.exit_code, cancelled.signal) == (0, 15)
    assert cancelled.comment == "nuro-ml:d/r/t/-1"
    assert done.state is SlurmJobState.COMPLETED and done.comment is None
    with pytest.raises(SlurmJobError, match="unexpected sacct output"):
        parse_sacct_jobs("41|train\n")


def test_exit_code_text():
    assert parse_exit_code("3:0") == (3, 0)
    assert parse_exit_code("0:15") == (0, 15)
    assert parse_exit_code(None) == (None, None)
    assert parse_exit_code("n/a") == (None, None)


def test_job_id_ordering_is_numeric():
    assert sorted(["10", "9", "9_2", "100"], key=job_id_sort_key) == ["9", "9_2", "10", "100"]


def test_time_limit_forms():
    assert format_time_limit(30) == "30"
    assert format_time_limit(timedelta(days=1, hours=2, seconds=5)) == "1-02:00:05"
    assert format_time_limit("2:00:00") == "2:00:00"
    with pytest.raises(SlurmJobError, match="positive"):
        format_time_limit(0)


def test_sbatch_arguments_for_a_gpu_job():
    spec = SlurmJobSpec(
        script="echo hi",
        name="d.t.abc",
        comment="nuro-ml:d/r/t/-1",
        gpus=2,
        gpu_type="a100",
        cpus_per_task=4,
        memory="8G",
        time_limit=timedelta(minutes=90),
        working_directory="/scratch/run",
        output_path="%x-%j.out",
        extra_args=("--nodes=1",),
    )
    assert build_sbatch_args(spec, partition="gpu", account="team-a") == [
        "--parsable",
        "--job-name=d.t.abc",
        "--comment=nuro-ml:d/r/t/-1",
        "--partition=gpu",
        "--account=team-a",
        "--gres=gpu:a100:2",
        "--cpus-per-task=4",
        "--mem=8G",
        "--time=0-01:30:00",
        "--chdir=/scratch/run",
        "--output=%x-%j.out",
        "--export=ALL",
        "--nodes=1",
    ]


def test_batch_script_gets_an_interpreter_line_and_rejects_bad_input(tmp_path):
    assert batch_script_text(SlurmJobSpec(script="echo hi")) == "#!/bin/bash\necho hi"
    assert batch_script_text(SlurmJobSpec(script="#!/bin/sh\necho hi")) == "#!/bin/sh\necho hi"
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/bash\necho hi\n")
    assert batch_script_text(SlurmJobSpec(script_path=str(script))) is None
    with pytest.raises(SlurmJobError, match="exactly one"):
        batch_script_text(SlurmJobSpec())
    with pytest.raises(SlurmJobError, match="empty"):
        batch_script_text(SlurmJobSpec(script="  \n"))
    with pytest.raises(SlurmJobError, match=r"missing\.sh does not exist"):
        batch_script_text(SlurmJobSpec(script_path=str(tmp_path / "missing.sh")))


def test_job_environment_keeps_worker_secrets_out(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", "postgres://user:secret@db/x")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    env = job_environment({"STAGE": "train"}, "/etc/slurm/slurm.conf")
    assert "AIRFLOW_CONN_WAREHOUSE" not in env
    assert env["STAGE"] == "train"
    assert env["SLURM_CONF"] == "/etc/slurm/slurm.conf"
    assert env["PATH"] == "/usr/bin:/bin"
    with pytest.raises(SlurmJobError, match="str to str"):
        job_environment({"N": 3}, None)  # type: ignore[dict-item]


def test_tail_of_a_long_log(tmp_path):
    log = tmp_path / "job.out"
    log.write_text("".join(f"line {i}\n" for i in range(5000)))
    assert tail_lines(log, 3) == ["line 4997", "line 4998", "line 4999"]
    assert tail_lines(tmp_path / "absent.out", 3) is None
