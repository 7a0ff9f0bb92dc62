"""Test helpers: ``vehicle_can`` and ``telemetry`` as the batch ETL and the stream's file sink lay
them out (batch: ``date=/vehicle=`` partitions; stream: files listed by ``_spark_metadata``)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

TS = pa.timestamp("us", tz="UTC")
#: (vehicle, time, speed) per row; brake and steering derive from the speed.
Row = tuple[str, datetime, float]


def _features(rows: list[Row]) -> dict[str, pa.Array]:
    return {
        "speed_mps": pa.array([r[2] for r in rows], pa.float64()),
        "brake_pressure_bar": pa.array([r[2] / 10 for r in rows], pa.float64()),
        "steering_angle_rad": pa.array([r[2] / 100 for r in rows], pa.float64()),
    }


def can_rows(rows: list[Row]) -> pa.Table:
    return pa.table(
        {
            "log_time": pa.array([r[1] for r in rows], TS),
            "log_time_ns": pa.array([int(r[1].timestamp() * 1e9) for r in rows], pa.int64()),
            "vehicle_id": pa.array([r[0] for r in rows]),
            "topic": pa.array(["/vehicle/can"] * len(rows)),
            **_features(rows),
            "gear": pa.array([3] * len(rows), pa.int32()),
        }
    )


def telemetry_rows(rows: list[Row]) -> pa.Table:
    return pa.table(
        {
            "entry_id": pa.array([f"{i}-0" for i in range(len(rows))]),
            "vehicle_id": pa.array([r[0] for r in rows]),
            "record_id": pa.array([f"rec-{r[0]}-{r[1].timestamp()}" for r in rows]),
            "event_time_ns": pa.array([int(r[1].timestamp() * 1e9) for r in rows], pa.int64()),
            **_features(rows),
            "event_time": pa.array([r[1] for r in rows], TS),
        }
    )


def write_batch_can(output: Path, rows: list[Row]) -> None:
    """The batch ETL's ``vehicle_can``: one file per ``date=/vehicle=`` partition."""
    by_part: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        by_part.setdefault((f"{row[1]:%Y-%m-%d}", row[0]), []).append(row)
    for (day, vehicle), part_rows in by_part.items():
        part = output / "vehicle_can" / f"date={day}" / f"vehicle={vehicle}"
        part.mkdir(parents=True, exist_ok=True)
        pq.write_table(can_rows(part_rows).drop_columns(["vehicle_id"]), part / "part-00000.parquet")


def write_sink(output: Path, table: str, batches: list[pa.Table], *, orphan: pa.Table | None = None) -> Path:
    """Files of a Spark file sink under ``<output>/stream/<table>``, one log entry per batch."""
    directory = output / "stream" / table
    meta = directory / "_spark_metadata"
    meta.mkdir(parents=True, exist_ok=True)
    start = len([p for p in meta.iterdir() if p.name.isdigit()])
    for offset, batch in enumerate(batches):
        path = directory / f"part-{start + offset:05d}-c000.snappy.parquet"
        pq.write_table(batch, path)
        entry = json.dumps({"path": path.as_uri(), "size": path.stat().st_size, "action": "add"})
        (meta / str(start + offset)).write_text(f"v1\n{entry}")
    if orphan is not None:  # a batch whose driver died before it committed
        pq.write_table(orphan, directory / "part-orphan-c000.snappy.parquet")
    return directory
