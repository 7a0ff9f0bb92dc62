"""Start the telemetry stream, gate a daily batch job on its watermark, stop it."""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import DAG
from nuro_ml.operators.stream import (
    RefreshLiveStateOperator,
    StartTelemetryStreamOperator,
    StopTelemetryStreamOperator,
)
from nuro_ml.sensors.stream import StreamHealthSensor, StreamWatermarkSensor

STATE_DIR = "/data/stream/state"

with DAG(
    dag_id="example_telemetry_stream",
    schedule="@daily",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["example", "streaming"],
):
    # [START howto_operator_start_telemetry_stream]
    start = StartTelemetryStreamOperator(
        task_id="ensure_stream",
        config={
            "output_path": "/data/etl",
            "checkpoint_path": "/data/stream/checkpoint",
            "state_dir": STATE_DIR,
            "landing_path": "/data/stream/landing",
            "redis_url": "redis://127.0.0.1:6379/0",
            "feature_repo": "/opt/feature_repo",
        },
    )
    # [END howto_operator_start_telemetry_stream]

    # [START howto_sensor_stream_health]
    watch = StreamHealthSensor(task_id="watch_stream", state_dir=STATE_DIR, stall_after=300, timeout=3600)
    # [END howto_sensor_stream_health]

    # [START howto_sensor_stream_watermark]
    gate = StreamWatermarkSensor(task_id="stream_caught_up", state_dir=STATE_DIR)
    # [END howto_sensor_stream_watermark]

    # [START howto_operator_stop_telemetry_stream]
    stop = StopTelemetryStreamOperator(task_id="stop_stream", state_dir=STATE_DIR)
    # [END howto_operator_stop_telemetry_stream]

    # [START howto_operator_refresh_live_state]
    refresh = RefreshLiveStateOperator(task_id="refresh_live_state", output_path="/data/etl")
    # [END howto_operator_refresh_live_state]

    start >> [watch, gate]
    gate >> [refresh, stop]
