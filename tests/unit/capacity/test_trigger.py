"""GpuCapacityTrigger: exact serialisation, one event per outcome, one shared poller per back end."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from airflow.triggers.base import TriggerEvent
from nuro_ml.capacity.ledger import QuotaLedger
from nuro_ml.capacity.records import LeaseRequest, LeaseState, RequestState
from nuro_ml.triggers.gpu_capacity import GpuCapacityTrigger, active_pollers

from tests.polling import await_for
from tests.unit.capacity.stubs import COUNTING_BACKEND, CountingBackend

TRIGGER_PATH = "nuro_ml.triggers.gpu_capacity.GpuCapacityTrigger"
KEY = "train/manual__1/wait_for_gpus/-1"


def make_trigger(ledger_url: str, **overrides) -> GpuCapacityTrigger:
    kwargs = {
        "request_key": KEY,
        "team": "perception",
        "pool": "local",
        "gpus": 2,
        "ledger_url": ledger_url,
        "poll_interval": 0.02,
        "backend": {"type": "static", "pools": [{"name": "local", "total_gpus": 4}]},
    }
    kwargs.update(overrides)
    return GpuCapacityTrigger(**kwargs)


def hold(ledger: QuotaLedger, gpus: int, key: str = "holder", team: str = "planning") -> str:
    lease = ledger.try_acquire(LeaseRequest(key=key, team=team, pool="local", gpus=gpus))
    assert lease is not None
    return lease.lease_id


def wait_reason(ledger: QuotaLedger, key: str = KEY) -> str | None:
    """Why the ledger says ``key`` still waits: set by the trigger after an admission round."""
    requests = ledger.requests(key=key)
    return requests[0].wait_reason if requests else None


async def rounds_after(start: int, more: int) -> int:
    """Wait until the running loop's only poller has done ``more`` rounds since ``start``."""

    def rounds() -> bool:
        pollers = active_pollers()
        return len(pollers) == 1 and next(iter(pollers.values())).rounds >= start + more

    await await_for(rounds, f"{more} admission rounds")
    return next(iter(active_pollers().values())).rounds


def test_serialize_lists_every_constructor_argument(ledger_url: str) -> None:
    trigger = make_trigger(ledger_url, deadline="2026-01-01T00:00:00+00:00", priority=3, nodes=2)
    classpath, kwargs = trigger.serialize()
    assert classpath == TRIGGER_PATH
    assert kwargs == {
        "request_key": KEY,
        "team": "perception",
        "pool": "local",
        "gpus": 2,
        "nodes": 2,
        "priority": 3,
        "backend": {"type": "static", "pools": [{"name": "local", "total_gpus": 4}]},
        "ledger_url": ledger_url,
        "lease_ttl": 43200.0,
        "poll_interval": 0.02,
        "deadline": "2026-01-01T00:00:00+00:00",
        "policy": "fair",
        "gpu_share": 1000,
        "gpu_model": None,
    }
    assert GpuCapacityTrigger(**kwargs).serialize() == (classpath, kwargs)


async def test_admitted_request_yields_its_lease(local_ledger: QuotaLedger, ledger_url: str) -> None:
    trigger = make_trigger(ledger_url)
    local_ledger.enqueue(trigger.lease_request())
    event = await trigger.run().asend(None)
    lease = local_ledger.active_lease(KEY)
    assert lease is not None and lease.gpus == 2
    payload = dict(event.payload)
    assert payload.pop("waited_seconds") >= 0
    assert event == TriggerEvent(
        {
            "request_key": KEY,
            "team": "perception",
            "pool": "local",
            "gpus": 2,
            "status": "success",
            "lease_id": lease.lease_id,
            "borrowed": 0,
            "expires_at": lease.expires_at.isoformat(),
            "waited_seconds": event.payload["waited_seconds"],
            "message": f"lease {lease.lease_id} holds 2 GPUs of pool local",
        }
    )
    assert local_ledger.requests(key=KEY)[0].state is RequestState.ADMITTED
    assert active_pollers() == {}


async def test_waits_until_gpus_are_released(local_ledger: QuotaLedger, ledger_url: str) -> None:
    holder = hold(local_ledger, 3)
    trigger = make_trigger(ledger_url)
    task = asyncio.ensure_future(trigger.run().asend(None))
    await await_for(lambda: wait_reason(local_ledger) == "pool_short", "the request to wait for the pool")
    assert not task.done()
    assert [p.key for p in local_ledger.snapshot().pending] == [KEY]
    local_ledger.release(holder)
    event = await asyncio.wait_for(task, 30)
    assert event.payload["status"] == "success"


async def test_deadline_yields_timeout_and_withdraws(local_ledger: QuotaLedger, ledger_url: str) -> None:
    hold(local_ledger, 4)
    deadline = (datetime.now(UTC) + timedelta(seconds=0.3)).isoformat()
    event = await make_trigger(ledger_url, deadline=deadline).run().asend(None)
    assert event.payload["status"] == "timeout"
    assert event.payload["message"] == f"no GPUs admitted for {KEY} before {deadline}"
    assert local_ledger.requests(key=KEY)[0].state is RequestState.TIMED_OUT
    assert local_ledger.active_lease(KEY) is None


async def test_request_that_can_never_fit_fails(local_ledger: QuotaLedger, ledger_url: str) -> None:
    local_ledger.upsert_quota("perception", "local", nominal=2, borrowing_limit=0)
    event = await make_trigger(ledger_url, gpus=3).run().asend(None)
    assert event.payload["status"] == "failed"
    assert "can never fit pool 'local'" in event.payload["message"]


async def test_errors_become_an_error_event_with_stack_trace(
    local_ledger: QuotaLedger, ledger_url: str
) -> None:
    event = await make_trigger(ledger_url, backend={"type": "static", "pools": []}).run().asend(None)
    payload = dict(event.payload)
    assert payload["status"] == "error"
    assert payload.pop("stack_trace").startswith("Traceback")
    assert "ValidationError" in payload["message"]


async def test_on_kill_withdraws_and_releases(local_ledger: QuotaLedger, ledger_url: str) -> None:
    trigger = make_trigger(ledger_url)
    local_ledger.enqueue(trigger.lease_request())
    await trigger.on_kill()
    assert local_ledger.requests(key=KEY)[0].state is RequestState.WITHDRAWN
    # A kill after the lease was taken gives the GPUs back.
    lease_id = hold(local_ledger, 2, key=KEY, team="perception")
    await trigger.on_kill()
    assert local_ledger.lease(lease_id).state is LeaseState.RELEASED


async def test_one_backend_query_per_interval_for_many_waiting_triggers(
    local_ledger: QuotaLedger, ledger_url: str
) -> None:
    name = uuid.uuid4().hex
    backend = {"type": COUNTING_BACKEND, "name": name}
    holder = hold(local_ledger, 4)
    triggers = [
        make_trigger(ledger_url, request_key=f"train/r/t{i}/-1", gpus=1, backend=backend, poll_interval=0.05)
        for i in range(25)
    ]
    tasks = [asyncio.ensure_future(t.run().asend(None)) for t in triggers]
    await await_for(
        lambda: any(p.rounds >= 4 for p in active_pollers().values()), "4 rounds of the shared poller"
    )
    pollers = active_pollers()
    assert len(pollers) == 1
    poller = next(iter(pollers.values()))
    # Every round served all 25 waiting triggers with a single back-end query.
    assert CountingBackend.queries[name] == poller.backend_queries
    assert poller.backend_queries in (poller.rounds, poller.rounds + 1)
    assert len(poller.subscriptions) == 25
    local_ledger.release(holder)
    admitted: list[asyncio.Future] = []
    while len(admitted) < 4:
        waiting = [t for t in tasks if t not in admitted]
        done, _ = await asyncio.wait(waiting, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        assert done
        admitted.extend(done)
    assert len(admitted) == 4
    assert all(t.result().payload["status"] == "success" for t in admitted)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert active_pollers() == {}


async def test_admitted_triggers_fire_in_policy_order(local_ledger: QuotaLedger, ledger_url: str) -> None:
    holder = hold(local_ledger, 4)
    order: list[str] = []

    async def wait(trigger: GpuCapacityTrigger) -> None:
        event = await trigger.run().asend(None)
        assert event.payload["status"] == "success"
        order.append(trigger.request_key)
        lease = QuotaLedger(ledger_url).active_lease(trigger.request_key)
        QuotaLedger(ledger_url).release(lease.lease_id)

    triggers = [
        make_trigger(ledger_url, request_key=f"k-prio-{p}", gpus=4, priority=p, team="perception")
        for p in (1, 5, 3)
    ]
    tasks = [asyncio.ensure_future(wait(t)) for t in triggers]
    # All three must be waiting before the GPUs come free, or the first would win by arrival.
    await await_for(
        lambda: all(wait_reason(local_ledger, t.request_key) for t in triggers), "all three requests waiting"
    )
    local_ledger.release(holder)
    await asyncio.wait_for(asyncio.gather(*tasks), 60)
    assert order == ["k-prio-5", "k-prio-3", "k-prio-1"]


@pytest.mark.parametrize("backend", [None, {"type": "static", "pools": [{"name": "local", "total_gpus": 4}]}])
async def test_ledger_only_and_backend_pollers_are_separate(
    local_ledger: QuotaLedger, ledger_url: str, backend
) -> None:
    event = await make_trigger(ledger_url, backend=backend).run().asend(None)
    assert event.payload["status"] == "success"


def _no_countdown(text: str) -> str:
    """``text`` with "<n>s from now" countdowns blanked: they tick between two rounds."""
    return re.sub(r"\d+s from now", "<n>s from now", text)


def _reason_lines(capsys: pytest.CaptureFixture[str], seen: list[str]) -> list[str]:
    """The trigger's "Waiting for" task-log lines so far (its structlog logger writes to stdout)."""
    seen.extend(line for line in capsys.readouterr().out.splitlines() if "Waiting for" in line)
    return seen


async def test_deferred_wait_logs_the_reason_once_per_change_and_stores_it(
    local_ledger: QuotaLedger, ledger_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    holder = hold(local_ledger, 3)
    task = asyncio.ensure_future(make_trigger(ledger_url).run().asend(None))
    lines: list[str] = []
    await await_for(lambda: _reason_lines(capsys, lines), "the first reason in the task log")
    rounds = await rounds_after(0, 20)  # 20 rounds with the same answer log it once
    [line] = _reason_lines(capsys, lines)
    stored = local_ledger.requests(key=KEY)[0]
    assert stored.wait_reason == "pool_short"
    assert "Waiting for 2 GPUs of pool local [pool_short]: pool 'local' has room for 1 GPUs" in line
    # The stored sentence is rewritten every round; only its countdown may have moved since the log.
    assert stored.wait_message is not None
    assert _no_countdown(stored.wait_message) in _no_countdown(line)

    # Now the team's own limit holds it back instead: logged once more.
    local_ledger.release(holder)
    hold(local_ledger, 1, key="own", team="perception")
    local_ledger.upsert_quota("perception", "local", nominal=2, borrowing_limit=0)
    await await_for(lambda: len(_reason_lines(capsys, lines)) > 1, "the changed reason in the task log")
    await rounds_after(rounds, 20)
    assert ["[quota_limit]" in line for line in _reason_lines(capsys, lines)] == [False, True]
    assert local_ledger.requests(key=KEY)[0].wait_reason == "quota_limit"
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_unreachable_back_end_is_the_stored_and_logged_reason(
    local_ledger: QuotaLedger, ledger_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    local_ledger.enqueue(LeaseRequest(key=KEY, team="perception", pool="local", gpus=2))
    down = {"type": "ray", "address": "http://127.0.0.1:9", "timeout_seconds": 1}
    task = asyncio.ensure_future(make_trigger(ledger_url, backend=down).run().asend(None))
    await await_for(lambda: wait_reason(local_ledger), "a stored reason")
    stored = local_ledger.requests(key=KEY)[0]
    assert stored.wait_reason == "backend_unreachable"
    assert "capacity back end of pool 'local' unreachable: Ray dashboard http://127.0.0.1:9" in (
        stored.wait_message or ""
    )
    [line] = await await_for(lambda: _reason_lines(capsys, []), "the reason in the task log")
    assert "[backend_unreachable]" in line
    assert not task.done()  # keeps waiting for the back end to come back
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
