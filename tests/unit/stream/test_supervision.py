"""The stream's progress record, the health and watermark triggers, and the sensors on them."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from airflow.exceptions import TaskDeferred
from airflow.triggers.base import TriggerEvent
from nuro_ml.etl.stream_progress import QueryProgress, StreamProgress
from nuro_ml.exceptions import StreamError
from nuro_ml.sensors.stream import StreamHealthSensor, StreamWatermarkSensor
from nuro_ml.triggers.stream import StreamHealthTrigger, StreamWatermarkTrigger, health

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
TRIGGERS = "nuro_ml.triggers.stream"


def _iso(t: datetime) -> str:
    return t.isoformat()


def write_record(state: Path, *, pid: int | None = None, **queries: dict[str, Any]) -> StreamProgress:
    record = StreamProgress(
        pid=pid if pid is not None else os.getpid(),
        started_at=_iso(NOW - timedelta(hours=1)),
        checkpoint=str(state / "ckpt"),
        output=str(state / "out"),
        queries={
            name: QueryProgress(id=f"id-{name}", run_id=f"run-{name}", **fields)
            for name, fields in queries.items()
        },
    )
    record.write(state)
    return record


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# -- the record ----------------------------------------------------------------------------


def test_record_round_trips_and_watermark_is_the_lowest_over_queries(tmp_path: Path) -> None:
    write_record(
        tmp_path,
        telemetry={"watermark": "2026-12-05T11:00:00.000Z", "heartbeat_at": _iso(NOW)},
        segments_vehicle_can={"watermark": "2026-12-05T10:30:00.000Z", "heartbeat_at": _iso(NOW)},
        online={"heartbeat_at": _iso(NOW)},
    )
    record = StreamProgress.read(tmp_path)
    assert record is not None
    assert record.watermark() == datetime(2026, 12, 5, 10, 30, tzinfo=UTC)
    assert record.watermark(["telemetry"]) == datetime(2026, 12, 5, 11, 0, tzinfo=UTC)
    # A query named but without a watermark yet holds everything back.
    assert record.watermark(["telemetry", "online"]) is None


def test_a_query_whose_watermark_is_still_the_epoch_has_committed_no_time(tmp_path: Path) -> None:
    write_record(tmp_path, telemetry={"watermark": "1970-01-01T00:00:00.000Z"})
    record = StreamProgress.read(tmp_path)
    assert record is not None and record.watermark() is None


def test_a_corrupt_record_names_its_file(tmp_path: Path) -> None:
    (tmp_path / "progress.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"progress\.json is not JSON"):
        StreamProgress.read(tmp_path)


# -- health --------------------------------------------------------------------------------


def test_health_is_none_for_a_live_stream_with_recent_heartbeats(tmp_path: Path) -> None:
    record = write_record(tmp_path, telemetry={"heartbeat_at": _iso(NOW - timedelta(seconds=20))})
    assert health(record, stall_after=60, now=NOW) is None


def test_health_reports_a_stall_after_the_limit(tmp_path: Path) -> None:
    record = write_record(
        tmp_path,
        telemetry={"heartbeat_at": _iso(NOW - timedelta(seconds=5))},
        online={"heartbeat_at": _iso(NOW - timedelta(seconds=90))},
    )
    status, message = health(record, stall_after=60, now=NOW) or ("", "")
    assert status == "stalled"
    assert "90 s" in message and "limit 60 s" in message


def test_health_reports_a_dead_driver_and_a_failed_query(tmp_path: Path) -> None:
    record = write_record(tmp_path, pid=dead_pid(), telemetry={"heartbeat_at": _iso(NOW)})
    assert health(record, 60, NOW) == ("dead", f"stream driver {record.pid} is not running")
    record = write_record(tmp_path, telemetry={"heartbeat_at": _iso(NOW), "terminated": "boom"})
    status, message = health(record, 60, NOW) or ("", "")
    assert status == "dead" and "telemetry: boom" in message
    assert health(None, 60, NOW) == ("dead", "the stream has no progress record (it never started)")


# -- triggers ------------------------------------------------------------------------------


def test_health_trigger_serializes_every_argument() -> None:
    trigger = StreamHealthTrigger(state_dir="/s", stall_after=30.0, poll_interval=2.0)
    assert trigger.serialize() == (
        "nuro_ml.triggers.stream.StreamHealthTrigger",
        {"state_dir": "/s", "stall_after": 30.0, "poll_interval": 2.0},
    )


def test_watermark_trigger_serializes_every_argument() -> None:
    trigger = StreamWatermarkTrigger(state_dir="/s", target="2026-12-05T12:00:00+00:00", queries=["a"])
    assert trigger.serialize() == (
        "nuro_ml.triggers.stream.StreamWatermarkTrigger",
        {"state_dir": "/s", "target": "2026-12-05T12:00:00+00:00", "queries": ["a"], "poll_interval": 10.0},
    )


@pytest.mark.asyncio
async def test_health_trigger_fires_once_the_driver_dies(tmp_path: Path) -> None:
    pid = dead_pid()
    write_record(tmp_path, pid=pid, telemetry={"heartbeat_at": _iso(NOW)})
    trigger = StreamHealthTrigger(state_dir=str(tmp_path), stall_after=60, poll_interval=0.01)
    with mock.patch(f"{TRIGGERS}._now", return_value=NOW):
        event = await trigger.run().asend(None)
    assert event == TriggerEvent(
        {
            "status": "dead",
            "message": f"stream driver {pid} is not running",
            "pid": pid,
            "state_dir": str(tmp_path),
        }
    )


@pytest.mark.asyncio
async def test_health_trigger_keeps_waiting_while_healthy_then_fires_on_stall(tmp_path: Path) -> None:
    write_record(tmp_path, telemetry={"heartbeat_at": _iso(NOW)})
    trigger = StreamHealthTrigger(state_dir=str(tmp_path), stall_after=60, poll_interval=0.01)
    clock = iter([NOW + timedelta(seconds=10), NOW + timedelta(seconds=30), NOW + timedelta(seconds=61)])
    with mock.patch(f"{TRIGGERS}._now", side_effect=lambda: next(clock)):
        event = await trigger.run().asend(None)
    assert event.payload["status"] == "stalled"


@pytest.mark.asyncio
async def test_health_trigger_turns_an_unreadable_record_into_an_error_event(tmp_path: Path) -> None:
    (tmp_path / "progress.json").write_text("{")
    event = await StreamHealthTrigger(state_dir=str(tmp_path)).run().asend(None)
    payload = dict(event.payload)
    assert payload.pop("stack_trace").startswith("Traceback")
    assert payload["status"] == "error" and "is not JSON" in payload["message"]


@pytest.mark.asyncio
async def test_watermark_trigger_fires_when_the_watermark_passes_the_target(tmp_path: Path) -> None:
    write_record(tmp_path, telemetry={"watermark": "2026-12-05T11:59:00.000Z"})
    trigger = StreamWatermarkTrigger(
        state_dir=str(tmp_path), target="2026-12-05T12:00:00+00:00", poll_interval=0.01
    )
    run = trigger.run()
    # The trigger is still waiting: advance the stream, then it fires.
    import asyncio

    task = asyncio.ensure_future(run.asend(None))
    await asyncio.sleep(0.05)
    assert not task.done()
    write_record(tmp_path, telemetry={"watermark": "2026-12-05T12:00:05.000Z"})
    event = await asyncio.wait_for(task, 5)
    assert event == TriggerEvent(
        {"status": "success", "watermark": "2026-12-05T12:00:05+00:00", "target": "2026-12-05T12:00:00+00:00"}
    )


# -- sensors -------------------------------------------------------------------------------


def test_watermark_sensor_holds_the_run_until_the_watermark_passes_the_interval_end(tmp_path: Path) -> None:
    end = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    sensor = StreamWatermarkSensor(task_id="gate", state_dir=str(tmp_path), target=end, deferrable=True)
    # No record yet, then a watermark short of the interval end: the run is held (deferred).
    for mark in (None, "2026-12-05T11:59:59.000Z"):
        if mark is not None:
            write_record(tmp_path, telemetry={"watermark": mark})
        with pytest.raises(TaskDeferred) as deferred:
            sensor.execute({})
        trigger = deferred.value.trigger
        assert isinstance(trigger, StreamWatermarkTrigger)
        assert trigger.target == end.isoformat() and trigger.state_dir == str(tmp_path)
    assert not sensor.poke({})
    # The stream commits through the interval end: the run is released.
    write_record(tmp_path, telemetry={"watermark": "2026-12-05T12:00:00.000Z"})
    assert sensor.poke({})
    assert sensor.execute_complete({}, {"status": "success", "watermark": "w", "target": "t"}) == "w"


@pytest.mark.parametrize("status", ["error", "failed"])
def test_watermark_sensor_fails_on_a_bad_event(tmp_path: Path, status: str) -> None:
    sensor = StreamWatermarkSensor(task_id="gate", state_dir=str(tmp_path), target=NOW)
    with pytest.raises(StreamError, match="record unreadable"):
        sensor.execute_complete({}, {"status": status, "message": "record unreadable"})


def test_watermark_sensor_rejects_a_target_that_is_not_a_time(tmp_path: Path) -> None:
    sensor = StreamWatermarkSensor(task_id="gate", state_dir=str(tmp_path), target="")
    with pytest.raises(StreamError, match="target '' is not a time"):
        sensor.poke({})


def test_health_sensor_defers_on_a_healthy_stream_and_returns_the_verdict_of_a_dead_one(
    tmp_path: Path,
) -> None:
    write_record(tmp_path, telemetry={"heartbeat_at": datetime.now(tz=UTC).isoformat()})
    sensor = StreamHealthSensor(task_id="watch", state_dir=str(tmp_path), stall_after=300, deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    assert isinstance(deferred.value.trigger, StreamHealthTrigger)
    pid = dead_pid()
    write_record(tmp_path, pid=pid, telemetry={"heartbeat_at": datetime.now(tz=UTC).isoformat()})
    assert sensor.execute({}) == {"status": "dead", "message": f"stream driver {pid} is not running"}
    with pytest.raises(StreamError, match="oops"):
        sensor.execute_complete({}, {"status": "error", "message": "oops"})
