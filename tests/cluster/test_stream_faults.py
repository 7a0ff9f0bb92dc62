"""Fault test of the telemetry stream: SIGKILL its driver mid-batch, restart from the checkpoint.

The stream runs as the start operator runs it in production (a detached driver process with
its own Spark), so this costs two Spark start-ups; it lives in the on-demand tier.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from dataclasses import asdict
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.dataset as ds
import redis
from nuro_ml.etl.arrivals import Arrivals
from nuro_ml.etl.sink_log import committed_files
from nuro_ml.etl.stream_progress import StreamProgress, pid_alive
from nuro_ml.operators.stream import StartTelemetryStreamOperator, StopTelemetryStreamOperator
from nuro_ml.stream.job import StreamJobConfig
from nuro_ml.triggers.stream import StreamHealthTrigger

from tests.fixtures.services import RedisServer
from tests.integration.stream.test_stream_job import can_messages

VEHICLES = ["veh-001", "veh-002"]
RECORDS = 12_000
SEGMENTS = 6
DB = 12


def _committed_rows(state: Path, query: str) -> int:
    progress = StreamProgress.read(state)
    q = progress.queries.get(query) if progress else None
    return q.batch_id if q is not None else -1


def _committed_rows_in(table: Path) -> int:
    files = committed_files(table) or set()
    return ds.dataset(sorted(str(f) for f in files), format="parquet").count_rows() if files else 0


def test_sigkill_mid_batch_then_restart_from_checkpoint_loses_and_duplicates_nothing(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    client = redis.Redis(host=redis_server.host, port=redis_server.port, db=DB, decode_responses=True)
    client.flushdb()
    state = tmp_path / "state"
    cfg = StreamJobConfig(
        output_path=str(tmp_path / "out"),
        checkpoint_path=str(tmp_path / "checkpoint"),
        state_dir=str(state),
        landing_path=str(tmp_path / "landing"),
        redis_url=f"redis://{redis_server.host}:{redis_server.port}/{DB}",
        trigger_seconds=1.0,
        max_records_per_trigger=2_000,
        max_files_per_trigger=1,
    )
    start = StartTelemetryStreamOperator(task_id="ensure_stream", config=asdict(cfg), startup_timeout=400)
    stop = StopTelemetryStreamOperator(task_id="stop_stream", state_dir=str(state), grace=60)
    first = start.execute({})
    assert first["started"] and set(first["queries"]) == {"segments_vehicle_can", "telemetry"}
    arrivals = Arrivals(
        vehicles=VEHICLES,
        landing=tmp_path / "landing",
        segments=SEGMENTS,
        segments_per_second=0.5,
        segment_seconds=4.0,
        redis_client=client,
        records=RECORDS,
        records_per_second=500.0,
    )
    sender = threading.Thread(target=arrivals.run)
    sender.start()
    try:
        # Kill once some batches committed and arrivals are still coming: a batch is in flight.
        deadline = time.monotonic() + 300
        while _committed_rows(state, "telemetry") < 2 or _committed_rows(state, "segments_vehicle_can") < 1:
            assert time.monotonic() < deadline, "the stream committed nothing"
            time.sleep(0.2)
        # Reads are capped per batch, so records are still waiting: the next batch is running.
        progress = StreamProgress.read(state)
        assert progress is not None
        assert progress.queries["telemetry"].batch_id * cfg.max_records_per_trigger < RECORDS
        # The whole driver (Python and its JVM) dies at once, as on a lost node.
        os.killpg(first["pid"], signal.SIGKILL)
        while pid_alive(first["pid"]):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(first["pid"], os.WNOHANG)
            time.sleep(0.1)

        event = asyncio.run(
            asyncio.wait_for(
                StreamHealthTrigger(state_dir=str(state), stall_after=300, poll_interval=0.2)
                .run()
                .asend(None),
                30,
            )
        )
        assert event.payload["status"] == "dead"

        second = start.execute({})
        assert second["started"] and second["pid"] != first["pid"]
        # The queries keep their ids across the restart: they resume from the checkpoint.
        assert second["queries"] == first["queries"]
        # Idempotent: a second start finds the stream running and does nothing.
        assert start.execute({})["started"] is False

        sender.join(timeout=300)
        messages = can_messages(arrivals.landed)
        deadline = time.monotonic() + 400
        while True:
            # While the stream writes, only committed files are whole: count those.
            tel = _committed_rows_in(tmp_path / "out" / "stream" / "telemetry")
            can = _committed_rows_in(tmp_path / "out" / "stream" / "vehicle_can")
            if tel >= RECORDS and can >= messages:
                break
            assert time.monotonic() < deadline, (
                f"stream stuck at {tel}/{RECORDS} records, {can}/{messages} rows"
            )
            time.sleep(1)
    finally:
        sender.join(timeout=60)
        result = stop.execute({})
    assert result["stopped"]
    assert stop.execute({})["stopped"] is False

    # Counted by pyarrow over the folders (Spark's metadata log ignored): every message once.
    telemetry = ds.dataset(tmp_path / "out" / "stream" / "telemetry", format="parquet").to_table()
    assert telemetry.num_rows == RECORDS
    assert pc.count_distinct(telemetry.column("record_id")).as_py() == RECORDS
    can = ds.dataset(tmp_path / "out" / "stream" / "vehicle_can", format="parquet").to_table()
    assert can.num_rows == messages
    keys = pc.binary_join_element_wise(
        can.column("vehicle_id"), can.column("topic"), can.column("log_time_ns").cast("string"), "|"
    )
    assert pc.count_distinct(keys).as_py() == messages
    client.flushdb()
    client.close()
