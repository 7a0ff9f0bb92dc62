"""Test helpers: scene_stats partitions in the ETL's layout and a feature store on them."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from nuro_ml import settings
from nuro_ml.features.synthetic import write_scene_stats

FEATURE_REPO = settings.REPO_ROOT / "feature_repo"
VEHICLES = ("veh01", "veh02")
DAY0 = date(2026, 3, 1)


def scene_stats_root() -> Path:
    return settings.etl_output_dir() / "scene_stats"


def days(n: int, first: date = DAY0) -> list[date]:
    return [first + timedelta(days=i) for i in range(n)]


def utc(day: date, hour: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def write_days(
    n_days: int,
    *,
    first: date = DAY0,
    vehicles: Sequence[str] = VEHICLES,
    scenes: int = 6,
    speed_offset: float = 0.0,
) -> list[Path]:
    return write_scene_stats(
        scene_stats_root(),
        days=days(n_days, first),
        vehicles=vehicles,
        scenes_per_drive=scenes,
        speed_offset=speed_offset,
    )


def write_live_state(n_days: int, *, first: date = DAY0) -> None:
    """History for ``vehicle_live_state``: batch ``vehicle_can`` days, then a stream tail day
    (segment rows and a live record), built into the view's table as the DAG does."""
    from nuro_ml.etl.live_state import refresh_live_state

    from tests.unit.stream.tables import can_rows, telemetry_rows, write_batch_can, write_sink

    out = settings.etl_output_dir()
    *batch_days, tail = days(n_days, first)
    write_batch_can(
        out,
        [
            (v, utc(d, 8) + timedelta(minutes=i), 10.0 * (n + 1) + i)
            for d in batch_days
            for n, v in enumerate(VEHICLES)
            for i in range(3)
        ],
    )
    segment = can_rows([(v, utc(tail, 9), 20.0 + n) for n, v in enumerate(VEHICLES)])
    write_sink(out, "vehicle_can", [segment])
    record = telemetry_rows([(VEHICLES[0], utc(tail, 9) + timedelta(seconds=30), 25.0)])
    write_sink(out, "telemetry", [record])
    refresh_live_state(out)


def read_source() -> pa.Table:
    files = sorted(p for p in scene_stats_root().rglob("*.parquet") if not p.name.startswith("."))
    return pa.concat_tables([pq.read_table(p) for p in files])


def copy_repo(dst: Path) -> Path:
    """A private copy of the shipped feature repository (tests that edit definitions)."""
    target = dst / "feature_repo"
    shutil.copytree(FEATURE_REPO, target, ignore=shutil.ignore_patterns("__pycache__", "data"))
    return target
