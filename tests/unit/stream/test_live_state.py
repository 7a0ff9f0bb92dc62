"""The live view's offline table: batch partitions, then the stream's tail, rebuilt day by day."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from nuro_ml.etl.live_state import refresh_live_state

from tests.unit.stream.tables import can_rows, telemetry_rows, write_batch_can, write_sink


def t(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 12, day, hour, minute, tzinfo=UTC)


def _day(output: Path, day: str) -> Path:
    return output / "live_state" / f"date={day}" / "part-0.parquet"


def test_batch_days_win_stream_rows_after_them_and_live_records_all_count(tmp_path: Path) -> None:
    write_batch_can(tmp_path, [("veh-1", t(1, 8), 1.0), ("veh-1", t(2, 8), 2.0)])
    write_sink(
        tmp_path,
        "vehicle_can",
        [
            can_rows([("veh-1", t(2, 9), 20.0), ("veh-2", t(2, 9), 21.0)]),  # the batch covers 12-02
            can_rows([("veh-1", t(3, 9), 3.0), ("veh-2", t(3, 9, 5), 4.0)]),
        ],
        orphan=can_rows([("veh-1", t(3, 10), 99.0)]),  # never committed: not read
    )
    write_sink(tmp_path, "telemetry", [telemetry_rows([("veh-2", t(3, 9, 1), 5.0)])])

    report = refresh_live_state(tmp_path)

    assert report.inputs == {"vehicle_can": 4, "telemetry": 1}
    assert (report.rows, report.batch_through) == (5, "2026-12-02")
    assert report.written == ["2026-12-01", "2026-12-02", "2026-12-03"]
    day3 = pq.ParquetFile(_day(tmp_path, "2026-12-03")).read().to_pylist()
    assert [(r["vehicle_id"], r["event_timestamp"], r["speed_mps"]) for r in day3] == [
        ("veh-1", t(3, 9), 3.0),
        ("veh-2", t(3, 9, 1), 5.0),  # the live record, between the segment rows
        ("veh-2", t(3, 9, 5), 4.0),
    ]
    assert day3[0]["brake_pressure_bar"] == 0.3 and day3[0]["steering_angle_rad"] == 0.03
    day2 = pq.ParquetFile(_day(tmp_path, "2026-12-02")).read()
    assert day2.column("speed_mps").to_pylist() == [2.0]


def test_a_refresh_rewrites_only_changed_days_and_drops_days_without_rows(tmp_path: Path) -> None:
    write_batch_can(tmp_path, [("veh-1", t(1, 8), 1.0)])
    write_sink(tmp_path, "vehicle_can", [can_rows([("veh-1", t(2, 9), 2.0)])])
    refresh_live_state(tmp_path)
    day1 = _day(tmp_path, "2026-12-01").stat().st_mtime_ns

    again = refresh_live_state(tmp_path)
    assert (again.written, again.unchanged, again.removed) == ([], ["2026-12-01", "2026-12-02"], [])
    assert again.inputs == {"vehicle_can": 0, "telemetry": 0}  # unchanged inputs are not read

    # More of the tail day: only that day is read again.
    write_sink(tmp_path, "vehicle_can", [can_rows([("veh-1", t(2, 10), 2.5)])])
    tail = refresh_live_state(tmp_path)
    assert (tail.written, tail.unchanged, tail.inputs["vehicle_can"]) == (["2026-12-02"], ["2026-12-01"], 2)

    # Without its manifest, a refresh reads every day and keeps the files that did not change.
    (tmp_path / "live_state" / "_inputs.json").unlink()
    rebuilt = refresh_live_state(tmp_path)
    assert rebuilt.written == [] and rebuilt.unchanged == ["2026-12-01", "2026-12-02"]

    # The batch reaches 12-02 without rows of that vehicle; its tail day moves to 12-03.
    write_batch_can(tmp_path, [("veh-2", t(2, 8), 7.0)])
    write_sink(tmp_path, "vehicle_can", [can_rows([("veh-1", t(3, 9), 3.0)])])
    third = refresh_live_state(tmp_path)
    assert (third.written, third.unchanged) == (["2026-12-02", "2026-12-03"], ["2026-12-01"])
    assert _day(tmp_path, "2026-12-01").stat().st_mtime_ns == day1
    assert pq.ParquetFile(_day(tmp_path, "2026-12-02")).read().column("vehicle_id").to_pylist() == ["veh-2"]

    # A batch rerun that no longer has 12-03 rows and a tail that vanished: the day goes.
    (tmp_path / "stream").rename(tmp_path / "stream-old")
    fourth = refresh_live_state(tmp_path)
    assert fourth.removed == ["2026-12-03"] and not _day(tmp_path, "2026-12-03").exists()
    days = sorted(p.name for p in (tmp_path / "live_state").glob("date=*"))
    assert days == ["date=2026-12-01", "date=2026-12-02"]


def test_no_inputs_yet_write_nothing_and_a_bad_stream_table_is_named(tmp_path: Path) -> None:
    empty = refresh_live_state(tmp_path)
    assert (empty.rows, empty.written, empty.batch_through) == (0, [], None)
    assert not (tmp_path / "live_state").exists()

    write_sink(tmp_path, "telemetry", [can_rows([("veh-1", t(1, 8), 1.0)])])  # no event_time
    bad = r"stream rows in .*telemetry/part-\S+ have no time column 'event_time'"
    with pytest.raises(KeyError, match=bad):
        refresh_live_state(tmp_path)
