"""The telemetry stream on real Spark, Redis and Feast: exactly-once tables, latest values online."""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest
from mcap.reader import make_reader
from nuro_ml.etl.arrivals import Arrivals
from nuro_ml.etl.schemas import TOPIC_CAN
from nuro_ml.etl.stream_progress import StreamProgress
from nuro_ml.stream.job import StreamJob, StreamJobConfig

from tests.integration.stream.conftest import StreamEnv, committed, count_rows

pytestmark = pytest.mark.integration

VEHICLES = ["veh-001", "veh-002"]


def can_messages(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        with open(path, "rb") as fh:
            summary = make_reader(fh).get_summary()
        assert summary is not None and summary.statistics is not None
        ids = [cid for cid, ch in summary.channels.items() if ch.topic == TOPIC_CAN]
        total += sum(summary.statistics.channel_message_counts.get(cid, 0) for cid in ids)
    return total


def wait_for(what: str, check: Any, state: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            record = (state / "progress.json").read_text() if (state / "progress.json").exists() else "none"
            raise AssertionError(f"timed out waiting for {what}; progress record: {record}")
        time.sleep(0.5)


def expected_latest(env: StreamEnv) -> dict[str, tuple[float, float, float]]:
    """Latest (by event time) speed, brake, steering per vehicle over both stream tables."""
    rows = []
    for table, ts in (("vehicle_can", "log_time"), ("telemetry", "event_time")):
        dataset = committed(env.output / "stream" / table)
        assert dataset is not None
        data = dataset.to_table(
            columns=["vehicle_id", ts, "speed_mps", "brake_pressure_bar", "steering_angle_rad"]
        )
        rows.extend(data.rename_columns(["vehicle_id", "t", "s", "b", "a"]).to_pylist())
    latest: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["vehicle_id"] not in latest or row["t"] >= latest[row["vehicle_id"]]["t"]:
            latest[row["vehicle_id"]] = row
    return {v: (r["s"], r["b"], r["a"]) for v, r in latest.items()}


def online(env: StreamEnv) -> dict[str, tuple[float, float, float]]:
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(env.repo))
    got = store.get_online_features(
        features=[
            "vehicle_live_state:speed_mps",
            "vehicle_live_state:brake_pressure_bar",
            "vehicle_live_state:steering_angle_rad",
        ],
        entity_rows=[{"vehicle_id": v} for v in VEHICLES],
    ).to_dict()
    return {
        v: (got["speed_mps"][i], got["brake_pressure_bar"][i], got["steering_angle_rad"][i])
        for i, v in enumerate(got["vehicle_id"])
    }


def test_segments_and_live_records_land_exactly_once_and_online_holds_the_latest(
    spark_session: Any, stream_env: StreamEnv
) -> None:
    env = stream_env
    cfg = StreamJobConfig(
        output_path=str(env.output),
        checkpoint_path=str(env.checkpoint),
        state_dir=str(env.state),
        landing_path=str(env.landing),
        redis_url=env.redis_url,
        feature_repo=str(env.repo),
        trigger_seconds=1.0,
    )
    job = StreamJob(spark_session, cfg, pid=0)
    try:
        job.start()
        arrivals = Arrivals(
            vehicles=VEHICLES,
            landing=env.landing,
            segments=4,
            segments_per_second=1.0,
            segment_seconds=4.0,
            redis_client=env.client,
            records=3000,
            records_per_second=1000.0,
        )
        arrivals.run()
        # Duplicates: the same segment landing again under another name, records published twice.
        first = arrivals.landed[0]
        shutil.copy(first, first.with_name(f"{first.stem}-reupload.mcap"))
        for _, fields in env.client.xrange("telemetry", count=25):
            env.client.xadd("telemetry", fields)
        messages = can_messages(arrivals.landed)
        assert messages > 0

        wait_for("telemetry rows", lambda: count_rows(env.output / "stream" / "telemetry") >= 3000, env.state)
        wait_for(
            "segment rows", lambda: count_rows(env.output / "stream" / "vehicle_can") >= messages, env.state
        )
        # A record an hour late, once the watermark stands near now: dropped as late.
        wait_for("a telemetry watermark", lambda: _watermark(env) is not None, env.state)
        env.client.xadd(
            "telemetry",
            {
                "vehicle_id": VEHICLES[0],
                "record_id": "late-1",
                "event_time_ns": str(time.time_ns() - 3600 * 10**9),
                "speed_mps": "99",
                "brake_pressure_bar": "99",
                "steering_angle_rad": "0",
            },
        )
        # Let the duplicates' and the late record's batches commit too.
        wait_for("the duplicates' batches", lambda: _committed_entries(env) == 3026, env.state)
        latest = expected_latest(env)
        wait_for("online features", lambda: online(env) == latest, env.state)
    finally:
        job.stop()

    telemetry = ds.dataset(env.output / "stream" / "telemetry", format="parquet").to_table()
    assert telemetry.num_rows == 3000
    assert pc.count_distinct(telemetry.column("record_id")).as_py() == 3000
    assert "late-1" not in set(telemetry.column("record_id").to_pylist())
    can = ds.dataset(env.output / "stream" / "vehicle_can", format="parquet").to_table()
    assert can.num_rows == messages
    assert set(can.column("vehicle_id").to_pylist()) == set(VEHICLES)
    assert online(env) == latest

    progress = StreamProgress.read(env.state)
    assert progress is not None
    assert set(progress.queries) == {"segments_vehicle_can", "telemetry", "online"}
    assert progress.queries["telemetry"].watermark is not None
    assert progress.freshness["samples"] > 0
    assert 0 <= progress.freshness["p95_seconds"] < 120

    _live_view_reads_the_stream_tail_then_the_batch(spark_session, env, arrivals.landed, messages, latest)


def _offline(env: StreamEnv, at: datetime) -> dict[str, tuple[float, float, float]]:
    """``vehicle_live_state`` by Feast's point-in-time join at ``at`` (its offline store)."""
    import pandas as pd
    from feast import FeatureStore

    entities = pd.DataFrame({"vehicle_id": VEHICLES, "event_timestamp": [at] * len(VEHICLES)})
    frame = (
        FeatureStore(repo_path=str(env.repo))
        .get_historical_features(
            entity_df=entities,
            features=[
                f"vehicle_live_state:{c}" for c in ("speed_mps", "brake_pressure_bar", "steering_angle_rad")
            ],
        )
        .to_df()
    )
    return {
        r.vehicle_id: (r.speed_mps, r.brake_pressure_bar, r.steering_angle_rad) for r in frame.itertuples()
    }


def _live_view_reads_the_stream_tail_then_the_batch(
    spark: Any, env: StreamEnv, landed: list[Path], messages: int, latest: dict[str, Any]
) -> None:
    """The view's offline history over the sinks' own Parquet: stream only, then a batch run."""
    from nuro_ml.etl.job import ETLJobConfig, run_etl
    from nuro_ml.etl.live_state import refresh_live_state

    tail = refresh_live_state(env.output)
    assert tail.inputs == {"vehicle_can": messages, "telemetry": 3000} and tail.batch_through is None
    assert tail.rows == messages + 3000
    now = datetime.now(tz=UTC)
    assert _offline(env, now) == latest  # the offline history ends where the online store is

    # The batch ETL processes one vehicle's segments for their day: that day is the batch's now.
    days = sorted({p.parent.parent.name.removeprefix("date=") for p in landed})
    result = run_etl(
        spark,
        ETLJobConfig(
            input_path=str(env.landing),
            output_path=str(env.output),
            start=days[0],
            end=(datetime.fromisoformat(days[-1]) + timedelta(days=1)).date().isoformat(),
            quarantine_path=str(env.root / "quarantine"),
            vehicles=[VEHICLES[0]],
        ),
    )
    batch_rows = ds.dataset(env.output / "vehicle_can", format="parquet", partitioning="hive").count_rows()
    assert batch_rows == result["rows"]["vehicle_can"] > 0
    after = refresh_live_state(env.output)
    assert after.batch_through == days[-1]
    # The segments' days are rebuilt from the batch: the stream's rows of those days are
    # superseded, the other vehicle's included. The live records (dated today) are not the
    # batch's; their day's inputs did not change, so it is not even read again.
    assert after.written == days and tail.written == sorted({*days, *after.unchanged})
    assert after.inputs == {"vehicle_can": batch_rows, "telemetry": 0}
    live = ds.dataset(env.output / "live_state", format="parquet", partitioning="hive").to_table()
    assert live.num_rows == batch_rows + 3000


def _watermark(env: StreamEnv) -> datetime | None:
    """The telemetry query's watermark once it is within the hour (not the epoch default)."""
    progress = StreamProgress.read(env.state)
    mark = progress.watermark(["telemetry"]) if progress is not None else None
    return mark if mark is not None and mark > datetime.now(tz=UTC) - timedelta(minutes=30) else None


def _committed_entries(env: StreamEnv) -> int:
    """Entries the telemetry query has read through: the end offset of its last batch."""
    offsets = env.checkpoint / "telemetry" / "offsets"
    if not offsets.is_dir():
        return 0
    batches = sorted((int(p.name) for p in offsets.iterdir() if p.name.isdigit()), reverse=True)
    commits = env.checkpoint / "telemetry" / "commits"
    for batch in batches:
        if (commits / str(batch)).exists():
            import json

            end = json.loads((offsets / str(batch)).read_text().splitlines()[-1])["id"]
            return len(env.client.xrange("telemetry", max=end))
    return 0
