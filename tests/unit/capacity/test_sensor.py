"""GpuCapacitySensor and the lease operators, driven the way the task runner drives them."""

from __future__ import annotations

import pytest
from airflow.sdk.bases.operator import TriggerFailureReason
from airflow.sdk.exceptions import AirflowSensorTimeout, AirflowSkipException, TaskDeferred
from nuro_ml.capacity.ledger import QuotaLedger
from nuro_ml.capacity.records import LeaseRequest, LeaseState, RequestState
from nuro_ml.exceptions import CapacityError, QuotaExceededError
from nuro_ml.operators.capacity import GpuLeaseReleaseOperator, GpuQuotaOperator
from nuro_ml.sensors.gpu_capacity import GpuCapacitySensor
from nuro_ml.triggers.gpu_capacity import GpuCapacityTrigger

from tests.unit.capacity.stubs import FakeTaskInstance

KEY = "train/manual__1/wait_for_gpus/-1"
STATIC = {"type": "static", "pools": [{"name": "local", "total_gpus": 4}]}


def sensor(ledger_url: str, **overrides) -> GpuCapacitySensor:
    kwargs = {
        "task_id": "wait_for_gpus",
        "team": "perception",
        "gpus": 2,
        "pool": "local",
        "backend": STATIC,
        "ledger_url": ledger_url,
        "poke_interval": 5,
        "timeout": 600,
    }
    kwargs.update(overrides)
    return GpuCapacitySensor(**kwargs)


def hold(ledger: QuotaLedger, gpus: int) -> str:
    lease = ledger.try_acquire(LeaseRequest(key="holder", team="planning", pool="local", gpus=gpus))
    return lease.lease_id


def test_admits_at_once_and_returns_the_lease_id(local_ledger: QuotaLedger, ledger_url: str) -> None:
    ti = FakeTaskInstance()
    lease_id = sensor(ledger_url).execute({"ti": ti})
    lease = local_ledger.lease(lease_id)
    assert lease.active and lease.key == KEY and lease.gpus == 2
    assert ti.xcom["lease"] == {
        "lease_id": lease_id,
        "team": "perception",
        "pool": "local",
        "gpus": 2,
        "nodes": 1,
        "gpu_milli": 2000,
        "gpu_model": None,
        "node_names": [],
        "shares": [],
        "expires_at": lease.expires_at.isoformat(),
    }
    # The Airflow pool of the task is untouched by the GPU pool argument.
    assert sensor(ledger_url).pool != "local"


def test_retried_task_reuses_its_lease(local_ledger: QuotaLedger, ledger_url: str) -> None:
    first = sensor(ledger_url).execute({"ti": FakeTaskInstance()})
    retry = FakeTaskInstance()
    retry.try_number = 2
    assert sensor(ledger_url).execute({"ti": retry}) == first
    assert len(local_ledger.leases()) == 1


def test_defers_with_a_trigger_when_the_pool_is_full(local_ledger: QuotaLedger, ledger_url: str) -> None:
    hold(local_ledger, 3)
    with pytest.raises(TaskDeferred) as deferred:
        sensor(ledger_url, priority="7").execute({"ti": FakeTaskInstance()})
    trigger = deferred.value.trigger
    assert isinstance(trigger, GpuCapacityTrigger)
    assert deferred.value.method_name == "execute_complete"
    assert 0 < deferred.value.timeout.total_seconds() <= 600
    _, kwargs = trigger.serialize()
    assert kwargs["request_key"] == KEY and kwargs["gpus"] == 2 and kwargs["priority"] == 7
    waiting = local_ledger.waiting_request(KEY)
    assert waiting is not None and waiting.deadline.isoformat() == kwargs["deadline"]


def test_execute_complete_returns_lease_or_raises(local_ledger: QuotaLedger, ledger_url: str) -> None:
    ti = FakeTaskInstance()
    lease = local_ledger.try_acquire(LeaseRequest(key=KEY, team="perception", pool="local", gpus=2))
    task = sensor(ledger_url)
    assert (
        task.execute_complete({"ti": ti}, {"status": "success", "lease_id": lease.lease_id}) == lease.lease_id
    )
    assert ti.xcom["lease"]["lease_id"] == lease.lease_id
    local_ledger.release(lease.lease_id)
    with pytest.raises(CapacityError, match="is released in the ledger"):
        task.execute_complete({"ti": ti}, {"status": "success", "lease_id": lease.lease_id})
    with pytest.raises(QuotaExceededError, match="too big"):
        task.execute_complete({"ti": ti}, {"status": "failed", "message": "too big"})
    with pytest.raises(CapacityError, match="trigger error: boom"):
        task.execute_complete({"ti": ti}, {"status": "error", "message": "boom", "stack_trace": "Traceback"})


@pytest.mark.parametrize(
    ("soft_fail", "expected"), [(False, AirflowSensorTimeout), (True, AirflowSkipException)]
)
def test_timeout_event_fails_or_skips_and_withdraws(
    local_ledger: QuotaLedger, ledger_url: str, soft_fail: bool, expected: type[Exception]
) -> None:
    hold(local_ledger, 4)
    task = sensor(ledger_url, soft_fail=soft_fail)
    ti = FakeTaskInstance()
    with pytest.raises(TaskDeferred):
        task.execute({"ti": ti})
    with pytest.raises(expected):
        task.resume_execution(
            "execute_complete",
            {"event": {"status": "timeout", "message": "late", "request_key": KEY}},
            {"ti": ti},
        )
    assert local_ledger.requests(key=KEY)[0].state is RequestState.TIMED_OUT


def test_triggerer_timeout_withdraws_the_request(local_ledger: QuotaLedger, ledger_url: str) -> None:
    hold(local_ledger, 4)
    task = sensor(ledger_url)
    ti = FakeTaskInstance()
    with pytest.raises(TaskDeferred):
        task.execute({"ti": ti})
    with pytest.raises(AirflowSensorTimeout):
        task.resume_execution("__fail__", {"error": TriggerFailureReason.TRIGGER_TIMEOUT}, {"ti": ti})
    assert local_ledger.waiting_request(KEY) is None


def test_poke_mode_times_out_and_leaves_the_queue(local_ledger: QuotaLedger, ledger_url: str) -> None:
    hold(local_ledger, 4)
    task = sensor(ledger_url, deferrable=False, poke_interval=0, timeout=0)
    with pytest.raises(AirflowSensorTimeout):
        task.execute({"ti": FakeTaskInstance()})
    assert local_ledger.requests(key=KEY)[0].state is RequestState.TIMED_OUT


def test_poke_mode_admits_when_capacity_frees(local_ledger: QuotaLedger, ledger_url: str) -> None:
    holder = hold(local_ledger, 4)
    task = sensor(ledger_url, deferrable=False)
    ti = FakeTaskInstance()
    assert task.poke({"ti": ti}).is_done is False
    local_ledger.release(holder)
    result = task.poke({"ti": ti})
    assert result.is_done and local_ledger.lease(result.xcom_value).key == KEY


def test_on_kill_withdraws_the_waiting_request(local_ledger: QuotaLedger, ledger_url: str) -> None:
    hold(local_ledger, 4)
    task = sensor(ledger_url)
    with pytest.raises(TaskDeferred):
        task.execute({"ti": FakeTaskInstance()})
    task.on_kill()
    assert local_ledger.requests(key=KEY)[0].state is RequestState.WITHDRAWN
    assert local_ledger.snapshot().pending == []


def test_backend_not_answering_yet_defers_instead_of_failing(
    local_ledger: QuotaLedger, ledger_url: str
) -> None:
    starting = {"type": "ray", "address": "http://127.0.0.1:9", "timeout_seconds": 1}
    with pytest.raises(TaskDeferred) as deferred:
        sensor(ledger_url, backend=starting).execute({"ti": FakeTaskInstance()})
    assert deferred.value.trigger.serialize()[1]["backend"] == starting
    waiting = local_ledger.waiting_request(KEY)
    assert waiting is not None and waiting.wait_reason == "backend_unreachable"
    assert "capacity back end of pool 'local' unreachable: Ray dashboard" in (waiting.wait_message or "")
    with pytest.raises(CapacityError, match=r"Ray dashboard http://127\.0\.0\.1:9"):
        sensor(ledger_url, backend=starting, deferrable=False).execute({"ti": FakeTaskInstance()})


def test_misconfiguration_is_reported_before_waiting(local_ledger: QuotaLedger, ledger_url: str) -> None:
    with pytest.raises(CapacityError, match="pool 'h100' is not registered"):
        sensor(ledger_url, pool="h100").execute({"ti": FakeTaskInstance()})
    with pytest.raises(QuotaExceededError, match="team 'mapping' has no quota in pool 'local'"):
        sensor(ledger_url, team="mapping").execute({"ti": FakeTaskInstance()})
    with pytest.raises(QuotaExceededError, match="can never fit"):
        sensor(ledger_url, gpus=5).execute({"ti": FakeTaskInstance()})
    with pytest.raises(CapacityError, match="gpus must be an integer, got 'two'"):
        sensor(ledger_url, gpus="two").execute({"ti": FakeTaskInstance()})
    with pytest.raises(CapacityError, match="invalid capacity backend config"):
        sensor(ledger_url, backend={"type": "static", "pool": "x"}).execute({"ti": FakeTaskInstance()})
    assert local_ledger.leases() == []


def test_release_operator_is_idempotent_and_reports_gpu_hours(
    local_ledger: QuotaLedger, ledger_url: str
) -> None:
    lease_id = sensor(ledger_url).execute({"ti": FakeTaskInstance()})
    release = GpuLeaseReleaseOperator(task_id="release_gpus", lease_id=lease_id, ledger_url=ledger_url)
    first = release.execute({"ti": FakeTaskInstance(task_id="release_gpus")})
    assert first["state"] == "released" and first["gpus"] == 2 and first["gpu_hours"] >= 0
    assert release.execute({"ti": FakeTaskInstance(task_id="release_gpus")}) == first
    assert local_ledger.lease(lease_id).state is LeaseState.RELEASED
    for missing in (None, "None", ""):
        op = GpuLeaseReleaseOperator(task_id="release_gpus", lease_id=missing, ledger_url=ledger_url)
        assert op.execute({"ti": FakeTaskInstance(task_id="release_gpus")}) is None


def test_release_by_sensor_task_when_no_lease_id_reached_xcom(
    local_ledger: QuotaLedger, ledger_url: str
) -> None:
    lease_id = sensor(ledger_url).execute({"ti": FakeTaskInstance()})
    op = GpuLeaseReleaseOperator(
        task_id="release_gpus", sensor_task_id="wait_for_gpus", ledger_url=ledger_url
    )
    result = op.execute({"ti": FakeTaskInstance(task_id="release_gpus")})
    assert result["lease_id"] == lease_id
    assert local_ledger.lease(lease_id).state is LeaseState.RELEASED


def test_quota_operator_registers_idempotently_and_validates_first(ledger_url: str) -> None:
    op = GpuQuotaOperator(
        task_id="register",
        pools=[{"name": "local", "capacity": "4", "gpu_type": "A100"}],
        quotas=[{"team": "perception", "pool": "local", "nominal": 4, "borrowing_limit": "0"}],
        ledger_url=ledger_url,
    )
    out = op.execute({"ti": FakeTaskInstance(task_id="register")})
    assert out == op.execute({"ti": FakeTaskInstance(task_id="register")})
    assert out["pools"] == [{"name": "local", "capacity": 4, "gpu_type": "A100"}]
    assert out["quotas"][0]["borrowing_limit"] == 0
    bad = GpuQuotaOperator(
        task_id="register",
        pools=[{"name": "local", "capacity": 8}],
        quotas=[{"team": "planning", "pool": "local"}],
        ledger_url=ledger_url,
    )
    with pytest.raises(CapacityError, match=r"quotas\[0\] lacks \['nominal'\]"):
        bad.execute({"ti": FakeTaskInstance(task_id="register")})
    # Nothing of the bad input was written.
    assert QuotaLedger(ledger_url).pool("local").capacity == 4
    fractional = GpuQuotaOperator(
        task_id="register",
        quotas=[{"team": "planning", "pool": "local", "nominal": "1.5", "lending_limit": "500m"}],
        ledger_url=ledger_url,
    )
    assert fractional.execute({"ti": FakeTaskInstance(task_id="register")})["quotas"][0]["nominal"] == 1.5
    assert {q.team: q.lending_limit for q in QuotaLedger(ledger_url).quotas("local")}["planning"] == 0.5
    finer = GpuQuotaOperator(
        task_id="register",
        quotas=[{"team": "planning", "pool": "local", "nominal": 1.0001}],
        ledger_url=ledger_url,
    )
    with pytest.raises(CapacityError, match=r"quotas\[0\]\.nominal: GPU amounts are counted in milli-GPUs"):
        finer.execute({"ti": FakeTaskInstance(task_id="register")})


def test_poke_logs_why_it_waits_once_per_change_and_stores_it(
    local_ledger: QuotaLedger, ledger_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    holder = hold(local_ledger, 3)
    task = sensor(ledger_url, deferrable=False)
    context = {"ti": FakeTaskInstance()}
    task._request_key = KEY
    for _ in range(3):
        assert not task.poke(context).is_done
    assert local_ledger.waiting_request(KEY).wait_reason == "pool_short"
    local_ledger.release(holder)
    hold(local_ledger, 2)  # planning now takes only its own quota: perception fits, admitted
    assert task.poke(context).is_done
    lines = [line for line in capsys.readouterr().out.splitlines() if "Waiting for" in line]
    assert (
        len(lines) == 1 and "Waiting for 2 GPUs of pool local [pool_short]: pool 'local' has room" in lines[0]
    )
