"""load_training_frame: scenes of an interval with their features and label, point-in-time joined."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from nuro_ml.exceptions import FeatureStoreError
from nuro_ml.features.synthetic import scene_stats_table, write_partition
from nuro_ml.features.training import load_training_frame
from nuro_ml.hooks.feast import FeastHook

from tests.unit.features.scene_data import DAY0, days, read_source, scene_stats_root, utc, write_days

FEATURES = [
    "speed_mean_mps",
    "speed_max_mps",
    "accel_p95_mps2",
    "jerk_abs_mean_mps3",
    "yaw_rate_abs_mean_rps",
    "gnss_fix_ratio",
    "gnss_h_accuracy_m",
    "lidar_points_mean",
    "camera_frames",
]


def test_frame_has_scenes_of_the_interval_with_their_own_features(sqlite_hook: FeastHook) -> None:
    write_days(3, scenes=4)
    sqlite_hook.apply()
    _day1, day2, day3 = days(3)

    frame = load_training_frame(start=utc(day2), end=utc(day3), vehicles=["veh02"])

    assert list(frame.columns) == ["scene_id", "vehicle_id", "event_timestamp", *FEATURES, "hard_brake"]
    source = read_source()
    expected = (
        source.filter(
            pc.and_(
                pc.equal(source.column("vehicle_id"), "veh02"),
                pc.and_(
                    pc.greater_equal(
                        source.column("event_timestamp"),
                        pa.scalar(utc(day2), source.schema.field("event_timestamp").type),
                    ),
                    pc.less(
                        source.column("event_timestamp"),
                        pa.scalar(utc(day3), source.schema.field("event_timestamp").type),
                    ),
                ),
            )
        )
        .sort_by("event_timestamp")
        .to_pylist()
    )
    assert frame["scene_id"].tolist() == [r["scene_id"] for r in expected]
    for row, want in zip(frame.to_dict("records"), expected, strict=True):
        for column in [*FEATURES, "hard_brake", "vehicle_id"]:
            assert row[column] == want[column], (row["scene_id"], column)
        assert row["event_timestamp"] == want["event_timestamp"]


def test_a_rewritten_partition_is_what_the_next_frame_sees(sqlite_hook: FeastHook) -> None:
    write_days(1, scenes=3)
    sqlite_hook.apply()
    day = days(1)[0]
    before = load_training_frame(start=utc(day), end=utc(days(2)[-1]), vehicles=["veh01"])
    # An ETL rerun overwrites the partition with corrected values, written later.
    rerun = scene_stats_table(
        vehicle_id="veh01",
        drive_id=f"d{day:%Y%m%d}00",
        start=utc(day, 8),
        scenes=3,
        created=utc(days(3)[-1]),
        speed_offset=30.0,
    )
    write_partition(scene_stats_root(), day=day, vehicle="veh01", table=rerun)

    after = load_training_frame(start=utc(day), end=utc(days(2)[-1]), vehicles=["veh01"])

    assert after["scene_id"].tolist() == before["scene_id"].tolist()
    assert after["speed_mean_mps"].tolist() == rerun.column("speed_mean_mps").to_pylist()
    assert after["speed_mean_mps"].tolist() != before["speed_mean_mps"].tolist()


def test_empty_interval_gives_an_empty_frame_with_all_columns(sqlite_hook: FeastHook) -> None:
    write_days(1)
    sqlite_hook.apply()
    frame = load_training_frame(start=utc(days(5)[-1]), end=utc(days(6)[-1]))
    assert frame.empty
    assert list(frame.columns) == ["scene_id", "vehicle_id", "event_timestamp", *FEATURES, "hard_brake"]


def test_unapplied_registry_is_a_clear_error(data_dir) -> None:
    write_days(1)
    with pytest.raises(FeatureStoreError, match=r"scene_training.*apply the feature repository"):
        load_training_frame(start=utc(DAY0), end=utc(days(2)[-1]))
