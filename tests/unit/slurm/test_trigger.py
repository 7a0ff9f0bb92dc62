from __future__ import annotations

import pytest
from nuro_ml.triggers.slurm import SlurmJobTrigger

TRIGGER_PATH = "nuro_ml.triggers.slurm.SlurmJobTrigger"


@pytest.fixture
def trigger() -> SlurmJobTrigger:
    return SlurmJobTrigger(
        job_id="42",
        slurm_conn_id="slurm_cluster_a",
        slurm_conf="/etc/slurm/cluster-a.conf",
        poll_interval=2.5,
        cancel_on_kill=False,
    )


def test_serialize_every_kwarg(trigger):
    assert trigger.serialize() == (
        TRIGGER_PATH,
        {
            "job_id": "42",
            "slurm_conn_id": "slurm_cluster_a",
            "slurm_conf": "/etc/slurm/cluster-a.conf",
            "poll_interval": 2.5,
            "cancel_on_kill": False,
        },
    )


def test_serialized_kwargs_rebuild_the_same_trigger(trigger):
    path, kwargs = trigger.serialize()
    assert SlurmJobTrigger(**kwargs).serialize() == (path, kwargs)


def test_defaults():
    assert SlurmJobTrigger(job_id="7").serialize()[1] == {
        "job_id": "7",
        "slurm_conn_id": "slurm_default",
        "slurm_conf": None,
        "poll_interval": 5.0,
        "cancel_on_kill": True,
    }


async def test_unreadable_cluster_config_becomes_one_error_event(tmp_path):
    missing = tmp_path / "absent" / "slurm.conf"
    trigger = SlurmJobTrigger(job_id="42", slurm_conn_id=None, slurm_conf=str(missing), poll_interval=0.1)
    gen = trigger.run()
    event = await gen.asend(None)
    payload = dict(event.payload)
    assert payload.pop("stack_trace").startswith("Traceback")
    assert payload == {
        "status": "error",
        "job_id": "42",
        "message": f"polling Slurm job 42 failed: slurm.conf {missing} (from connection None or hook "
        "argument) does not exist",
    }
    with pytest.raises(StopAsyncIteration):
        await gen.asend(None)


async def test_missing_slurm_commands_become_an_error_event(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    trigger = SlurmJobTrigger(job_id="42", slurm_conn_id=None, poll_interval=0.1)
    event = await trigger.run().asend(None)
    assert event.payload["status"] == "error"
    assert f"'scontrol' not found on PATH {tmp_path}" in event.payload["message"]
