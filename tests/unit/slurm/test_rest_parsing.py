"""slurmrestd (OpenAPI v0.0.38) bodies and replies, checked against captured output and the schema."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import jsonschema
import pytest
from nuro_ml.capacity.backends.slurm import SlurmBackend, SlurmBackendConfig
from nuro_ml.exceptions import SlurmJobError
from nuro_ml.hooks.slurm import SlurmHook, SlurmJobSpec
from nuro_ml.slurm.connection import SlurmClusterSettings
from nuro_ml.slurm.output import expand_output_path
from nuro_ml.slurm.rest import (
    job_info_from_rest,
    memory_megabytes,
    nodes_from_rest,
    rest_error_text,
    rest_is_unknown_job,
    rest_node_state,
    rest_submit_body,
    rest_wait_status,
    time_limit_minutes,
)
from nuro_ml.slurm.rest_client import SlurmRestClient
from nuro_ml.slurm.state import SlurmJobState

DATA = Path(__file__).parent / "data"
OPENAPI = json.loads((DATA / "slurmrestd_openapi_v0.0.38.json").read_text())


def captured(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def validate(instance: dict, schema_name: str) -> None:
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": OPENAPI["components"]}
    jsonschema.validate(instance, schema)


def test_failed_job_reply():
    (raw,) = captured("rest_job_failed.json")["jobs"]
    info = job_info_from_rest(raw)
    assert info.state is SlurmJobState.FAILED
    # exit 5 arrives as the raw wait status 1280.
    assert (info.exit_code, info.signal, info.reason) == (5, 0, "NonZeroExitCode")
    assert info.comment == "nuro-ml:d/r/t/-1"
    # standard_output is the unexpanded, relative pattern; the hook resolves it like slurmd.
    assert info.stdout_path == "/tmp/sj/r1-1.out"
    assert info.stderr_path == "/tmp/sj/r1-1.out"


def test_running_and_cancelled_job_replies():
    (running,) = captured("rest_job_running.json")["jobs"]
    (cancelled,) = captured("rest_job_cancelled.json")["jobs"]
    info = job_info_from_rest(running)
    assert (info.job_id, info.name, info.state, info.exit_code) == ("3", "hog", SlurmJobState.RUNNING, None)
    assert info.stdout_path == "/tmp/sj/hog-3.out"
    assert info.reason is None and info.nodes == "vm" and info.partition == "debug"
    info = job_info_from_rest(cancelled)
    assert (info.state, info.exit_code, info.signal) == (SlurmJobState.CANCELLED, 0, 15)


def test_job_list_reply():
    infos = [job_info_from_rest(j) for j in captured("rest_jobs.json")["jobs"]]
    assert {i.job_id: i.state for i in infos} == {
        "1": SlurmJobState.FAILED,
        "2": SlurmJobState.CANCELLED,
        "3": SlurmJobState.CANCELLED,
    }


def test_unknown_job_reply():
    payload = captured("rest_job_unknown.json")
    assert rest_is_unknown_job(payload)
    assert rest_error_text(payload) == "Invalid job id specified (Unable to find JobId=9999)"
    assert not rest_is_unknown_job(captured("rest_jobs.json"))


@pytest.mark.parametrize(
    ("capture", "state", "accepts", "used", "idle_cpus"),
    [
        ("rest_nodes_idle.json", "idle", True, 0, 8),
        ("rest_nodes_mixed.json", "mixed", True, 3, 7),
        ("rest_nodes_drained.json", "drained", False, 0, 8),
    ],
)
def test_node_replies(capture, state, accepts, used, idle_cpus):
    (node,) = nodes_from_rest(captured(capture)["nodes"])
    assert (node.node, node.partition, node.state) == ("vm", "debug", state)
    assert node.accepts_jobs is accepts
    assert (node.count(), node.count(used=True), node.cpus_idle) == (4, used, idle_cpus)


def test_backend_pools_from_rest_nodes():
    backend = SlurmBackend(SlurmBackendConfig())
    (pool,) = backend.pools_from_nodes(nodes_from_rest(captured("rest_nodes_mixed.json")["nodes"]))
    assert (pool.pool, pool.total_gpus, pool.free_gpus) == ("debug", 4, 1)


@pytest.mark.parametrize(
    ("state", "flags", "expected"),
    [
        ("idle", [], "idle"),
        ("mixed", ["DRAIN"], "draining"),
        ("idle", ["DRAIN"], "drained"),
        ("idle", ["NOT_RESPONDING"], "idle*"),
        ("idle", ["POWERED_DOWN"], "idle~"),
        ("idle", ["MAINTENANCE"], "maint"),
        ("down", ["INVALID_REG"], "inval"),
    ],
)
def test_node_state_flags(state, flags, expected):
    assert rest_node_state(state, flags) == expected


def test_submit_body_matches_the_openapi_schema(monkeypatch):
    for name in ("USER", "LOGNAME", "LANG", "LC_ALL", "TZ"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setenv("HOME", "/home/av")
    monkeypatch.setenv("SLURM_CONF", "/etc/slurm/local.conf")
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", "postgres://u:secret@db/x")
    spec = SlurmJobSpec(
        script="python train.py",
        name="d.train.abc",
        comment="nuro-ml:d/r/train/-1",
        gpus=2,
        gpu_type="a100",
        cpus_per_task=4,
        memory="16G",
        time_limit="1-00:00:30",
        environment={"STAGE": "train"},
        working_directory="/scratch/av",
        output_path="%x-%j.out",
    )
    body = rest_submit_body(spec, partition="gpu", account="av")
    validate(body, "v0.0.38_job_submission")
    job_properties = OPENAPI["components"]["schemas"]["v0.0.38_job_properties"]["properties"]
    assert set(body["job"]) <= set(job_properties)
    assert body == {
        "script": "#!/bin/bash\npython train.py",
        "job": {
            "environment": {"PATH": "/usr/bin:/bin", "HOME": "/home/av", "STAGE": "train"},
            "current_working_directory": "/scratch/av",
            "name": "d.train.abc",
            "comment": "nuro-ml:d/r/train/-1",
            "partition": "gpu",
            "account": "av",
            "cpus_per_task": 4,
            "standard_output": "%x-%j.out",
            "gres": "gpu:a100:2",
            "memory_per_node": 16384,
            "time_limit": 1441,
        },
    }


def test_submit_body_reads_script_files_and_refuses_cli_only_options(tmp_path):
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\necho from file\n")
    body = rest_submit_body(SlurmJobSpec(script_path=str(script)), partition=None, account=None)
    validate(body, "v0.0.38_job_submission")
    assert body["script"] == "#!/bin/sh\necho from file\n"
    with pytest.raises(SlurmJobError, match=r"extra sbatch arguments \['--nodes=2'\] cannot be sent"):
        rest_submit_body(SlurmJobSpec(script="true", extra_args=("--nodes=2",)), partition=None, account=None)


@pytest.mark.parametrize(
    ("value", "minutes"),
    [
        (30, 30),
        ("90", 90),
        ("1:30", 2),
        ("2:00:00", 120),
        ("1-00", 1440),
        ("1-2:30", 1590),
        (timedelta(hours=1), 60),
    ],
)
def test_time_limit_minutes(value, minutes):
    assert time_limit_minutes(value) == minutes


def test_bad_time_and_memory_are_named():
    with pytest.raises(SlurmJobError, match="time_limit 'soon' is not a Slurm time"):
        time_limit_minutes("soon")
    with pytest.raises(SlurmJobError, match="memory 'lots' is not a Slurm size"):
        memory_megabytes("lots")


@pytest.mark.parametrize(
    ("text", "mb"), [("4000", 4000), ("512M", 512), ("16G", 16384), ("1T", 1048576), ("2gb", 2048)]
)
def test_memory_megabytes(text, mb):
    assert memory_megabytes(text) == mb


def test_wait_status_and_output_expansion():
    assert rest_wait_status(768) == (3, 0)
    assert rest_wait_status(9) == (0, 9)
    assert rest_wait_status(None) == (None, None)
    assert expand_output_path(None, job_id="5", name="n", user="u", work_dir="/w") == "/w/slurm-5.out"
    assert expand_output_path("/logs/%u/%x_%j_100%%.log", job_id="5", name="n", user="u", work_dir="/w") == (
        "/logs/u/n_5_100%.log"
    )


def test_rest_client_urls_and_auth_headers():
    client = SlurmRestClient("https://slurm.example:6820/", user="av", token="jwt-value")
    assert client.base_url == "https://slurm.example:6820"
    assert client.path("jobs") == "/slurm/v0.0.38/jobs"
    assert client._headers["X-SLURM-USER-NAME"] == "av"
    assert client._headers["X-SLURM-USER-TOKEN"] == "jwt-value"
    assert SlurmRestClient("unix:/run/slurmrestd.sock").base_url == "http://slurmrestd"
    with pytest.raises(SlurmJobError, match="must start with http://, https:// or unix:"):
        SlurmRestClient("slurm.example:6820")


def test_connection_with_rest_url_and_token(monkeypatch):
    conn = {
        "conn_type": "slurm",
        "login": "av",
        "password": "jwt-value",
        "extra": {
            "rest_url": "https://slurm.example:6820",
            "partition": "gpu",
            "rest_api_version": "v0.0.38",
        },
    }
    monkeypatch.setenv("AIRFLOW_CONN_SLURM_REST_UNIT", json.dumps(conn))
    hook = SlurmHook("slurm_rest_unit")
    assert hook.settings == SlurmClusterSettings(
        partition="gpu", rest_url="https://slurm.example:6820", rest_user="av", rest_token="jwt-value"
    )
    assert "jwt-value" not in repr(hook.settings)
    assert hook.rest is not None and hook.rest.base_url == "https://slurm.example:6820"


def test_connection_cannot_mix_cli_and_rest(monkeypatch, tmp_path):
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=x\n")
    extra = {"rest_url": "https://slurm.example:6820", "slurm_conf": str(conf)}
    monkeypatch.setenv("AIRFLOW_CONN_SLURM_BOTH", json.dumps({"conn_type": "slurm", "extra": extra}))
    with pytest.raises(SlurmJobError, match=r"either slurm_conf .* or rest_url .*not both"):
        _ = SlurmHook("slurm_both").settings
