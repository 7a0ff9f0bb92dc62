"""Names the stream job, its readers and its feature views share: tables, queries, push source."""

from __future__ import annotations

STREAM_DIR = "stream"
TELEMETRY_TABLE = "telemetry"
ONLINE_QUERY = "online"
PUSH_SOURCE = "vehicle_live_push"
#: The live view's offline table: batch history plus stream tail, by the rule of ``etl.combined``.
LIVE_STATE_TABLE = "live_state"
#: Tables feeding the live view and their event-time column (``vehicle_can``: batch and stream).
LIVE_STATE_INPUTS = {"vehicle_can": "log_time", TELEMETRY_TABLE: "event_time"}
#: Columns of a live telemetry record (Redis Stream entry fields) and their Spark types.
TELEMETRY_FIELDS = {
    "vehicle_id": "string",
    "record_id": "string",
    "event_time_ns": "bigint",
    "speed_mps": "double",
    "brake_pressure_bar": "double",
    "steering_angle_rad": "double",
}
#: What the online query pushes per vehicle.
ONLINE_COLUMNS = ("vehicle_id", "event_timestamp", "speed_mps", "brake_pressure_bar", "steering_angle_rad")
