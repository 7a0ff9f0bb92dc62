"""Small, reproducible ``scene_stats`` partitions in the ETL's exact layout.

Tests and benchmarks use this to exercise Feast on data shaped like the ETL output without
running Spark; values are plausible (speeds, GNSS ratios, lidar counts) and deterministic for
a given seed, date, vehicle and drive.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from nuro_ml.etl.transforms import SCENE_STATS_SCHEMA

SCENE_WINDOW = timedelta(seconds=10)


def _seed(*parts: object) -> int:
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def scene_stats_table(
    *,
    vehicle_id: str,
    drive_id: str,
    start: datetime,
    scenes: int,
    created: datetime | None = None,
    seed: int = 0,
    speed_offset: float = 0.0,
) -> pa.Table:
    """One drive's scenes as a ``scene_stats`` table (10 s scenes from ``start``).

    :param vehicle_id: vehicle the drive belongs to.
    :param drive_id: drive identifier (part of every scene id).
    :param start: UTC start of the first scene.
    :param scenes: number of consecutive scenes.
    :param created: when the rows were "written" (defaults to one hour after the drive ends).
    :param seed: varies the values while keeping them reproducible.
    :param speed_offset: added to the speed columns, to make a recomputed partition differ.
    """
    rng = np.random.default_rng(_seed(seed, vehicle_id, drive_id, start.isoformat()))
    step = int(SCENE_WINDOW.total_seconds() * 1_000_000)
    start_us = int(start.timestamp() * 1_000_000)
    starts = start_us + step * np.arange(scenes, dtype=np.int64)
    created_at = created or (start + SCENE_WINDOW * scenes + timedelta(hours=1))
    speed_mean = rng.uniform(0.0, 25.0, scenes) + speed_offset
    brake = rng.gamma(2.0, 12.0, scenes)
    columns: dict[str, pa.Array] = {
        "scene_id": pa.array([f"{vehicle_id}_{drive_id}_{i:04d}" for i in range(scenes)], pa.string()),
        "vehicle_id": pa.array([vehicle_id] * scenes, pa.string()),
        "drive_id": pa.array([drive_id] * scenes, pa.string()),
        "event_timestamp": pa.array(starts, pa.int64()).cast(
            SCENE_STATS_SCHEMA.field("event_timestamp").type
        ),
        "scene_end": pa.array(starts + step, pa.int64()).cast(SCENE_STATS_SCHEMA.field("scene_end").type),
        "created_timestamp": pa.array(
            np.full(scenes, int(created_at.timestamp() * 1_000_000), dtype=np.int64), pa.int64()
        ).cast(SCENE_STATS_SCHEMA.field("created_timestamp").type),
        "speed_mean_mps": pa.array(speed_mean),
        "speed_max_mps": pa.array(speed_mean + rng.uniform(0.0, 5.0, scenes)),
        "accel_p95_mps2": pa.array(rng.uniform(0.2, 4.0, scenes)),
        "jerk_abs_mean_mps3": pa.array(rng.uniform(0.05, 2.5, scenes)),
        "yaw_rate_abs_mean_rps": pa.array(rng.uniform(0.0, 0.4, scenes)),
        "gnss_fix_ratio": pa.array(rng.uniform(0.6, 1.0, scenes)),
        "gnss_h_accuracy_m": pa.array(rng.uniform(0.3, 4.0, scenes)),
        "lidar_points_mean": pa.array(rng.uniform(80_000.0, 130_000.0, scenes)),
        "camera_frames": pa.array(rng.integers(95, 101, scenes), pa.int64()),
        "brake_pressure_max": pa.array(brake),
        "hard_brake": pa.array((brake > 60.0).astype(np.int64), pa.int64()),
    }
    return pa.Table.from_pydict(columns, schema=SCENE_STATS_SCHEMA)


def write_scene_stats(
    root: Path,
    *,
    days: Sequence[date],
    vehicles: Sequence[str],
    scenes_per_drive: int,
    drives_per_day: int = 1,
    seed: int = 0,
    speed_offset: float = 0.0,
    first_scene: time = time(8, 0),
) -> list[Path]:
    """Write one Parquet file per (day, vehicle) under ``root`` (the ``scene_stats`` directory).

    Files are written to a temporary name and renamed, as the ETL does, so readers never see a
    partial file. Returns the written paths.
    """
    written: list[Path] = []
    for day in days:
        for vehicle in vehicles:
            tables = []
            for drive in range(drives_per_day):
                drive_id = f"d{day:%Y%m%d}{drive:02d}"
                start = datetime.combine(day, first_scene, tzinfo=UTC) + timedelta(hours=2 * drive)
                tables.append(
                    scene_stats_table(
                        vehicle_id=vehicle,
                        drive_id=drive_id,
                        start=start,
                        scenes=scenes_per_drive,
                        seed=seed,
                        speed_offset=speed_offset,
                    )
                )
            written.append(write_partition(root, day=day, vehicle=vehicle, table=pa.concat_tables(tables)))
    return written


def write_partition(
    root: Path, *, day: date, vehicle: str, table: pa.Table, name: str = "part-00000"
) -> Path:
    """Write ``table`` as ``root/date=<day>/vehicle=<vehicle>/<name>.parquet`` atomically."""
    directory = root / f"date={day:%Y-%m-%d}" / f"vehicle={vehicle}"
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{name}.parquet"
    tmp = directory / f".{name}.parquet.tmp"
    pq.write_table(table, tmp)
    tmp.replace(target)
    return target
