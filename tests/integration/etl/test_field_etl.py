"""The ETL job on recordings shaped like the field's, and the data source registered the standard way."""

from __future__ import annotations

import shutil

import pyarrow.dataset as ds
import pytest
from nuro_ml.etl.job import ETLJobConfig, run_etl
from nuro_ml.exceptions import UnmappedTopicError

from tests.unit.etl import field_logs

pytestmark = pytest.mark.integration

DAY = "2024-11-24"


def _rows(root, table, vehicle=None):
    path = root / table
    if not path.is_dir():
        return 0
    data = ds.dataset(path, format="parquet", partitioning="hive")
    if vehicle is None:
        return data.count_rows()
    return data.to_table(filter=ds.field("vehicle") == vehicle).num_rows


@pytest.fixture
def field_raw(tmp_path):
    raw = tmp_path / "raw"
    ros = field_logs.write_ros2(raw / f"date={DAY}" / "vehicle=ros-1" / "rosbag2_2024_11_24-16_00_00_0.mcap")
    fox = field_logs.write_foxglove(raw / f"date={DAY}" / "vehicle=fox-1" / "drive-00.mcap", seconds=6.0)
    return raw, ros, fox


def test_job_maps_ros2_and_foxglove_recordings_and_rebuilds_on_mapping_change(
    spark_session, field_raw, tmp_path
):
    raw, ros, fox = field_raw
    out = tmp_path / "out"
    cfg = ETLJobConfig(
        input_path=str(raw),
        output_path=str(out),
        start=DAY,
        end="2024-11-25",
        quarantine_path=str(tmp_path / "q"),
    )
    result = run_etl(spark_session, cfg)
    messages = {t: ros.get(t, 0) + fox.get(t, 0) for t in {*ros, *fox}}
    assert result["messages"] == messages and result["excluded"] == {}
    assert result["rows"]["ego_pose"] == ros["/localization/kinematic_state"] + fox["/pose"]
    assert result["rows"]["imu"] == ros["/sensing/imu/tamagawa/imu_raw"]
    assert result["rows"]["lidar_points"] == ros["/sensing/lidar/top/pointcloud_raw"] + fox["/points"]
    assert result["rows"]["tf"] == ros["/tf"]
    for table, n in result["rows"].items():
        assert _rows(out, table) == n, table
    for vehicle in ("ros-1", "fox-1"):  # derived tables from any mapped pose source
        assert _rows(out, "ego_motion", vehicle) > 50 and _rows(out, "scene_stats", vehicle) == 1

    mapping_file = tmp_path / "fleet.yaml"
    mapping_file.write_text("version: 1\nexclude: [/tf]\n")
    excluded = run_etl(spark_session, ETLJobConfig(**{**cfg.__dict__, "mapping_path": str(mapping_file)}))
    # The mapping changed: both partitions rebuild; /tf is counted as excluded and its table retired.
    assert excluded["up_to_date"] == []
    assert excluded["excluded"] == {"/tf": ros["/tf"] + fox["/tf"]}
    assert "tf" not in excluded["rows"] and "frame_transforms" not in excluded["rows"]
    assert _rows(out, "tf") == 0 and _rows(out, "ego_pose") == result["rows"]["ego_pose"]

    again = run_etl(spark_session, ETLJobConfig(**{**cfg.__dict__, "mapping_path": str(mapping_file)}))
    assert sorted(again["up_to_date"]) == [f"date={DAY}/vehicle=fox-1", f"date={DAY}/vehicle=ros-1"]


def test_job_fails_on_a_topic_that_would_be_dropped(spark_session, field_raw, tmp_path):
    raw, _, _ = field_raw
    shutil.rmtree(raw / f"date={DAY}" / "vehicle=fox-1")
    mapping_file = tmp_path / "strict.yaml"
    mapping_file.write_text("version: 1\nunmapped: fail\nbuiltin: false\n")
    out = tmp_path / "out"
    cfg = ETLJobConfig(
        input_path=str(raw),
        output_path=str(out),
        start=DAY,
        end="2024-11-25",
        quarantine_path=str(tmp_path / "q"),
        mapping_path=str(mapping_file),
    )
    with pytest.raises(UnmappedTopicError) as err:
        run_etl(spark_session, cfg)
    message = str(err.value)
    assert message.startswith(f"{len(field_logs.ROS2_TOPICS)} topic(s) would be silently dropped")
    assert "'/sensing/imu/tamagawa/imu_raw' (schema 'sensor_msgs/msg/Imu')" in message
    assert "'/tf' (schema 'tf2_msgs/msg/TFMessage')" in message
    assert str(mapping_file) in message
    assert not list(out.rglob("*.parquet"))  # nothing published


def test_data_source_registered_the_standard_way(spark_session, field_raw):
    from nuro_ml.etl.datasource import McapDataSource

    raw, ros, _ = field_raw
    spark = spark_session
    # Spark's default for Python filter pushdown is off; our helper turns it on for the session.
    spark.conf.set("spark.sql.python.filterPushdown.enabled", "false")
    try:
        spark.dataSource.register(McapDataSource)
        path = str(raw / f"date={DAY}" / "vehicle=ros-1")
        df = spark.read.format("mcap").load(path)
        counts = {r["topic"]: r["count"] for r in df.groupBy("topic").count().collect()}
        assert counts == ros
        imu = spark.read.format("mcap").option("topics", "/sensing/imu/tamagawa/imu_raw").load(path)
        assert imu.filter(imu.linear_acceleration_z > 9.0).count() == ros["/sensing/imu/tamagawa/imu_raw"]
    finally:
        spark.conf.set("spark.sql.python.filterPushdown.enabled", "true")
