"""The batch + stream read rule, and the file sink's metadata log it trusts."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from nuro_ml.etl.combined import read_table
from nuro_ml.etl.sink_log import committed_files, remove_uncommitted

TS = pa.timestamp("us", tz="UTC")


def _rows(day: str, vehicle: str, speeds: list[float]) -> pa.Table:
    t = datetime.fromisoformat(f"{day}T08:00:00+00:00")
    return pa.table(
        {
            "log_time": pa.array([t] * len(speeds), TS),
            "speed_mps": pa.array(speeds, pa.float64()),
            "vehicle_id": pa.array([vehicle] * len(speeds)),
        }
    )


def write_batch(root: Path, day: str, vehicle: str, speeds: list[float]) -> None:
    part = root / "vehicle_can" / f"date={day}" / f"vehicle={vehicle}"
    part.mkdir(parents=True)
    pq.write_table(_rows(day, vehicle, speeds).drop_columns(["vehicle_id"]), part / "part-0.parquet")


def write_stream(root: Path, batches: list[list[tuple[str, str, list[float]]]], orphan: bool = False) -> Path:
    """Files as Spark's file sink writes them, with its metadata log (one entry per batch)."""
    table = root / "stream" / "vehicle_can"
    meta = table / "_spark_metadata"
    meta.mkdir(parents=True)
    n = 0
    for batch_id, batch in enumerate(batches):
        entries = []
        for day, vehicle, speeds in batch:
            path = table / f"part-{n:05d}.snappy.parquet"
            n += 1
            pq.write_table(_rows(day, vehicle, speeds), path)
            entries.append(json.dumps({"path": path.as_uri(), "size": path.stat().st_size, "action": "add"}))
        (meta / str(batch_id)).write_text("\n".join(["v1", *entries]))
    if orphan:
        pq.write_table(_rows("2026-12-03", "veh-001", [99.0]), table / "part-orphan.snappy.parquet")
    return table


def test_batch_partitions_win_and_stream_rows_after_the_batch_fill_the_tail(tmp_path: Path) -> None:
    write_batch(tmp_path, "2026-12-01", "veh-001", [1.0, 2.0])
    write_batch(tmp_path, "2026-12-02", "veh-001", [3.0])
    write_stream(
        tmp_path,
        [
            [("2026-12-02", "veh-001", [30.0, 31.0])],  # superseded: the batch covers 12-02
            [("2026-12-02", "veh-002", [40.0])],  # the batch says veh-002 had no logs that day
            [("2026-12-03", "veh-001", [5.0]), ("2026-12-03", "veh-002", [6.0])],
        ],
        orphan=True,  # a batch that never committed: not read
    )
    got = read_table(tmp_path, "vehicle_can", columns=["speed_mps"]).sort_by(
        [("date", "ascending"), ("vehicle", "ascending")]
    )
    assert got.to_pydict() == {
        "speed_mps": [1.0, 2.0, 3.0, 5.0, 6.0],
        "date": ["2026-12-01", "2026-12-01", "2026-12-02", "2026-12-03", "2026-12-03"],
        "vehicle": ["veh-001", "veh-001", "veh-001", "veh-001", "veh-002"],
    }


def test_stream_only_and_batch_only_tables_read_alone(tmp_path: Path) -> None:
    write_stream(tmp_path, [[("2026-12-03", "veh-001", [5.0])]])
    assert read_table(tmp_path, "vehicle_can").column("speed_mps").to_pylist() == [5.0]
    other = tmp_path / "other"
    write_batch(other, "2026-12-01", "veh-001", [1.0])
    assert read_table(other, "vehicle_can").num_rows == 1
    with pytest.raises(FileNotFoundError, match="table imu has neither batch partitions"):
        read_table(other, "imu")


def test_missing_columns_are_named(tmp_path: Path) -> None:
    write_batch(tmp_path, "2026-12-01", "veh-001", [1.0])
    with pytest.raises(KeyError, match=r"column\(s\) \['gear'\]"):
        read_table(tmp_path, "vehicle_can", columns=["gear"])


def test_uncommitted_files_are_removed_and_committed_ones_kept(tmp_path: Path) -> None:
    table = write_stream(tmp_path, [[("2026-12-03", "veh-001", [5.0])]], orphan=True)
    committed = committed_files(table)
    assert committed is not None and len(committed) == 1
    removed = remove_uncommitted(table)
    assert [p.name for p in removed] == ["part-orphan.snappy.parquet"]
    assert sorted(p.name for p in table.glob("*.parquet")) == ["part-00000.snappy.parquet"]
    assert remove_uncommitted(tmp_path / "no-such-table") == []
