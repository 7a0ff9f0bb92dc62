"""The one-pass file processor on recordings written with the upstream writers.

Row counts must equal message counts, and values must equal what the upstream decoders
(``mcap_ros2.decoder``, ``mcap_protobuf.decoder``) read from the same file.
"""

from __future__ import annotations

from datetime import UTC
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from mcap.reader import make_reader
from mcap_protobuf.decoder import DecoderFactory as ProtobufDecoderFactory
from mcap_ros2.decoder import DecoderFactory as Ros2DecoderFactory
from nuro_ml.etl import batching, mapping, mcap_io
from nuro_ml.etl.process import FileTask, process_file
from nuro_ml.etl.transforms import TransformConfig

from tests.unit.etl import field_logs

DAY, VEHICLE, DRIVE = "2024-11-24", "veh-1", "drive-0"


def _process(path: Path, staging: Path, spec: mapping.LoadedMapping | None = None) -> Any:
    task = FileTask(
        str(path), DAY, VEHICLE, DRIVE, str(staging), spec or mapping.builtin(), TransformConfig(), 1_000_000
    )
    return process_file(task)


def _table(staging: Path, table: str) -> Any:
    return ds.dataset(staging / table, format="parquet", partitioning="hive").to_table()


def _upstream(path: Path, factory: Any) -> dict[str, list[Any]]:
    """Decoded messages per topic, in file order, through the upstream reader and decoders."""
    out: dict[str, list[Any]] = {}
    with open(path, "rb") as fh:
        for _, channel, message, decoded in make_reader(
            fh, decoder_factories=[factory]
        ).iter_decoded_messages(log_time_order=False):
            out.setdefault(channel.topic, []).append((message.log_time, decoded))
    return {t: [d for _, d in sorted(v, key=lambda x: x[0])] for t, v in out.items()}


def _by_time(table: Any, topic: str, column: str) -> list[Any]:
    rows = (
        table.filter(ds.field("topic") == topic).sort_by("log_time_ns")
        if "topic" in table.column_names
        else table
    )
    return rows.column(column).to_pylist()


@pytest.mark.parametrize("layout", ["interleaved", "per-channel"])
@pytest.mark.parametrize("compression", ["zstd", "lz4", "none"])
def test_ros2_recording_maps_every_topic_with_upstream_values(tmp_path, layout, compression):
    path = tmp_path / "rosbag2_2024_11_24-16_00_00_0.mcap"
    counts = field_logs.write_ros2(path, layout=layout, compression=compression)
    with mcap_io.mapped(path) as buf:
        summary = mcap_io.read_summary(buf)
    assert summary is not None
    ids = [c.channel_ids for c in summary.chunks]
    if layout == "per-channel":
        assert all(len(c or ()) == 1 for c in ids)
    else:
        assert max(len(c or ()) for c in ids) == len(counts)

    result = _process(path, tmp_path / "staging")
    assert result.ok, result.reason
    assert result.messages == counts and result.unmapped is None
    assert result.routes == {
        "/sensing/imu/tamagawa/imu_raw": "imu",
        "/sensing/gnss/ublox/nav_sat_fix": "gnss_fix",
        "/localization/kinematic_state": "ego_pose",
        "/sensing/lidar/top/pointcloud_raw": "lidar_payload",
        "/sensing/camera/front/image_raw/compressed": "camera_payload",
        "/tf": "tf",
        "/vehicle/status/twist": "ego_twist",
    }
    topic_of = {table: topic for topic, table in result.routes.items()}
    for table, topic in topic_of.items():
        assert result.rows[table] == counts[topic], table
    assert result.rows["lidar_points"] == counts["/sensing/lidar/top/pointcloud_raw"]
    assert result.rows["camera_frames"] == counts["/sensing/camera/front/image_raw/compressed"]
    assert result.rows["ego_motion"] > 0 and result.rows["scene_stats"] >= 1

    staging = tmp_path / "staging"
    ref = _upstream(path, Ros2DecoderFactory())
    odom = ref["/localization/kinematic_state"]
    pose = _table(staging, "ego_pose")
    assert pose.column("x_m").to_pylist() == [m.pose.pose.position.x for m in odom]
    assert pose.column("qz").to_pylist() == [m.pose.pose.orientation.z for m in odom]
    assert pose.column("stamp_ns").to_pylist() == [
        m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec // 1000 * 1000 for m in odom
    ]
    imu = _table(staging, "imu")
    assert imu.column("angular_velocity_z").to_pylist() == [
        m.angular_velocity.z for m in ref["/sensing/imu/tamagawa/imu_raw"]
    ]
    gnss = _table(staging, "gnss_fix")
    fixes = ref["/sensing/gnss/ublox/nav_sat_fix"]
    assert gnss.column("latitude").to_pylist() == [m.latitude for m in fixes]
    assert gnss.column("fix_valid").to_pylist() == [m.status.status >= 0 for m in fixes]
    lidar = _table(staging, "lidar_points")
    clouds = ref["/sensing/lidar/top/pointcloud_raw"]
    assert lidar.column("point_count").to_pylist() == [len(m.data) // m.point_step for m in clouds]
    first = np.frombuffer(bytes(clouds[0].data), dtype=np.float32).reshape(-1, 4)
    assert lidar.column("z_max_m").to_pylist()[0] == pytest.approx(float(first[:, 2].max()))
    camera = _table(staging, "camera_payload")
    images = ref["/sensing/camera/front/image_raw/compressed"]
    assert camera.column("data").to_pylist() == [bytes(m.data) for m in images]
    tf = _table(staging, "tf")
    assert [len(t) for t in tf.column("transforms").to_pylist()] == [len(m.transforms) for m in ref["/tf"]]
    assert (
        tf.column("transforms").to_pylist()[2][1]["child_frame_id"]
        == ref["/tf"][2].transforms[1].child_frame_id
    )


def test_rows_are_written_in_several_row_groups(tmp_path, monkeypatch):
    from nuro_ml.etl import process

    path = tmp_path / "drive.mcap"
    counts = field_logs.write_ros2(path)
    monkeypatch.setattr(process, "_FLUSH_ROWS", 16)
    monkeypatch.setattr(process, "_GROUP_BYTES", 16 << 10)  # chunks decoded a few at a time
    monkeypatch.setattr(batching, "MIN_MESSAGES", 16)  # and channels passed on in small batches
    result = _process(path, tmp_path / "staging")
    assert result.ok and result.rows["imu"] == counts["/sensing/imu/tamagawa/imu_raw"]
    imu = tmp_path / "staging" / "imu" / f"date={DAY}" / f"vehicle={VEHICLE}" / f"part-{DRIVE}.parquet"
    assert pq.ParquetFile(imu).num_row_groups > 2
    assert _table(tmp_path / "staging", "imu").num_rows == counts["/sensing/imu/tamagawa/imu_raw"]


def test_each_chunk_is_decompressed_once(tmp_path, monkeypatch):
    path = tmp_path / "interleaved.mcap"
    field_logs.write_ros2(path, chunk_size=8 << 10)
    loaded: list[int] = []
    original = mcap_io.load_chunk_into

    def counting(buf: Any, chunk: Any, dest: Any, **kwargs: Any) -> None:
        loaded.append(chunk.offset)
        original(buf, chunk, dest, **kwargs)

    monkeypatch.setattr(mcap_io, "load_chunk_into", counting)
    result = _process(path, tmp_path / "staging")
    with mcap_io.mapped(path) as buf:
        summary = mcap_io.read_summary(buf)
    assert summary is not None and len(summary.chunks) > 5
    assert result.ok and len(result.rows) >= 7
    assert sorted(loaded) == sorted(c.offset for c in summary.chunks)  # every chunk, each once
    assert result.chunks_decompressed == len(summary.chunks)


@pytest.mark.parametrize("compression", ["zstd", "lz4", "none"])
def test_foxglove_recording_maps_with_upstream_values(tmp_path, compression):
    path = tmp_path / "foxglove.mcap"
    counts = field_logs.write_foxglove(path, compression=compression)
    result = _process(path, tmp_path / "staging")
    assert result.ok, result.reason
    assert result.routes == {
        "/pose": "ego_pose",
        "/gps": "gnss_fix",
        "/points": "lidar_payload",
        "/camera/jpeg": "camera_payload",
        "/camera/raw": "camera_payload",
        "/tf": "frame_transforms",
    }
    assert result.rows["camera_payload"] == counts["/camera/jpeg"] + counts["/camera/raw"]
    for topic in ("/pose", "/gps", "/points"):
        assert result.rows[result.routes[topic] or ""] == counts[topic]
    ref = _upstream(path, ProtobufDecoderFactory())
    staging = tmp_path / "staging"
    pose = _table(staging, "ego_pose")
    assert pose.column("y_m").to_pylist() == [m.pose.position.y for m in ref["/pose"]]
    assert pose.column("stamp_ns").to_pylist() == [
        m.timestamp.ToNanoseconds() // 1000 * 1000 for m in ref["/pose"]
    ]
    camera = _table(staging, "camera_payload")
    assert _by_time(camera, "/camera/raw", "format") == [m.encoding for m in ref["/camera/raw"]]
    assert _by_time(camera, "/camera/jpeg", "payload_bytes") == [len(m.data) for m in ref["/camera/jpeg"]]
    lidar = _table(staging, "lidar_points")
    assert lidar.column("point_count").to_pylist() == [len(m.data) // m.point_stride for m in ref["/points"]]
    tf = _table(staging, "frame_transforms")
    assert tf.num_rows == counts["/tf"]
    # Nested messages inside the repeated transforms are struct fields, flattened by path.
    assert tf.column("transforms").to_pylist() == [
        [
            {
                "timestamp": t.timestamp.ToDatetime(tzinfo=UTC),
                "parent_frame_id": t.parent_frame_id,
                "child_frame_id": t.child_frame_id,
                "translation_x": t.translation.x,
                "translation_y": t.translation.y,
                "translation_z": t.translation.z,
                "rotation_x": t.rotation.x,
                "rotation_y": t.rotation.y,
                "rotation_z": t.rotation.z,
                "rotation_w": t.rotation.w,
            }
            for t in m.transforms
        ]
        for m in ref["/tf"]
    ]


WHEEL_DEF = "# Wheel speeds of one axle.\nfloat64 left_mps\nfloat64 right_mps\nint32 axle\nstring source\n"


def _with_wheel_topic(writer: Any) -> None:
    schema = writer.register_msgdef("acme_msgs/msg/WheelSpeed", WHEEL_DEF)
    for i in range(7):
        t = field_logs.T0_NS + 5_000_000_000 + i * 100_000_000
        msg = {"left_mps": 1.5 * i, "right_mps": 1.25 * i, "axle": i % 2, "source": f"ecu{i}"}
        writer.write_message("/vehicle/wheel_speed", schema, msg, log_time=t, publish_time=t)


def test_unmapped_topic_lands_in_a_typed_generic_table(tmp_path):
    path = tmp_path / "drive.mcap"
    counts = field_logs.write_ros2(path, topics=field_logs.ROS2_TOPICS[:1], extra=_with_wheel_topic)
    result = _process(path, tmp_path / "staging")
    assert result.ok and result.routes["/vehicle/wheel_speed"] == "topic_vehicle_wheel_speed"
    assert result.rows["topic_vehicle_wheel_speed"] == 7 == result.messages["/vehicle/wheel_speed"]
    assert result.rows["imu"] == counts["/sensing/imu/tamagawa/imu_raw"]
    table = _table(tmp_path / "staging", "topic_vehicle_wheel_speed")
    assert str(table.schema.field("left_mps").type) == "double"
    assert str(table.schema.field("axle").type) == "int32"
    assert table.column("right_mps").to_pylist() == [1.25 * i for i in range(7)]
    assert table.column("source").to_pylist() == [f"ecu{i}" for i in range(7)]


def test_a_topic_ending_in_no_table_is_an_error_naming_topic_schema_and_mapping(tmp_path):
    path = tmp_path / "drive.mcap"
    field_logs.write_ros2(path, topics=field_logs.ROS2_TOPICS[:1], extra=_with_wheel_topic)
    strict_file = tmp_path / "fleet.yaml"
    strict_file.write_text("version: 1\nunmapped: fail\n")
    strict = mapping.load(strict_file)
    result = _process(path, tmp_path / "staging", strict)
    assert not result.ok and result.unmapped is not None
    assert "/vehicle/wheel_speed" in result.unmapped and "acme_msgs/msg/WheelSpeed" in result.unmapped
    assert str(strict_file) in result.unmapped
    assert not list((tmp_path / "staging").rglob("*.parquet"))  # nothing of the file is kept

    strict_file.write_text("version: 1\nunmapped: fail\nexclude: ['/vehicle/wheel*']\n")
    excluded = _process(path, tmp_path / "staging2", mapping.load(strict_file))
    assert excluded.ok and excluded.routes["/vehicle/wheel_speed"] is None
    assert excluded.messages["/vehicle/wheel_speed"] == 7
    assert not (tmp_path / "staging2" / "topic_vehicle_wheel_speed").exists()


def test_undecodable_topic_is_an_error_unless_excluded(tmp_path):
    def json_topic(writer: Any) -> None:
        raw = writer._writer
        schema_id = raw.register_schema("diag", "jsonschema", b"{}")
        channel = raw.register_channel("/diagnostics", "json", schema_id)
        raw.add_message(channel, field_logs.T0_NS + 1, b"{}", field_logs.T0_NS + 1, 0)

    path = tmp_path / "drive.mcap"
    field_logs.write_ros2(path, topics=field_logs.ROS2_TOPICS[:1], extra=json_topic)
    result = _process(path, tmp_path / "staging")
    assert result.unmapped and "/diagnostics" in result.unmapped and "'diag'" in result.unmapped
    assert "exclude" in result.unmapped and mapping.BUILTIN_NAME in result.unmapped
    spec = mapping.parse("version: 1\nexclude: [/diagnostics]\n", "fleet.yaml")
    ok = _process(path, tmp_path / "staging2", spec)
    assert ok.ok and ok.routes["/diagnostics"] is None and ok.messages["/diagnostics"] == 1


def test_mapping_file_renames_converts_units_and_overrides_per_vehicle(tmp_path):
    path = tmp_path / "drive.mcap"
    counts = field_logs.write_ros2(path, topics=[field_logs.ROS2_TOPICS[6]])
    text = """version: 1
tables:
  speed:
    sources:
      - schemas: [geometry_msgs/Twist*]
        time: header.stamp
        columns:
          kph: {field: twist.linear.x, scale: 3.6}
          yaw_rate: twist.angular.z
overrides:
  - vehicles: ["veh-9*"]
    exclude: ["/vehicle/*"]
"""
    spec = mapping.parse(text, "fleet.yaml")
    result = _process(path, tmp_path / "staging", spec)
    assert result.ok and result.rows == {"speed": counts["/vehicle/status/twist"]}
    table = _table(tmp_path / "staging", "speed")
    assert table.column("kph").to_pylist() == pytest.approx([28.8] * counts["/vehicle/status/twist"])
    assert spec.route("veh-901", "/vehicle/status/twist", "geometry_msgs/msg/TwistStamped").table is None
    assert spec.digest_for("veh-1") != spec.digest_for("veh-901")
    assert spec.digest_for("veh-1") == spec.digest_for("veh-2")


def _pose_file(path: Path, payload: Any, log_time: Any) -> list[int]:
    """A Foxglove pose recording in chunks of a few messages; returns each message's chunk offset."""
    from foxglove_schemas_protobuf.PoseInFrame_pb2 import PoseInFrame
    from mcap.writer import CompressionType, Writer
    from nuro_ml.etl import schemas

    with open(path, "wb") as fh:
        writer = Writer(fh, chunk_size=256, compression=CompressionType.ZSTD)
        writer.start()
        sid = writer.register_schema(
            "foxglove.PoseInFrame", "protobuf", schemas.file_descriptor_set(PoseInFrame)
        )
        cid = writer.register_channel("/pose", "protobuf", sid)
        for i in range(40):
            writer.add_message(cid, log_time(i), payload(i, PoseInFrame), log_time(i), i)
        writer.finish()
    holders: list[int] = []
    with mcap_io.mapped(path) as buf:
        for chunk in mcap_io.scan(buf).chunks:
            batch = mcap_io.frame_records(mcap_io.load_chunk(buf, chunk))
            holders += [chunk.offset] * len(batch)
    return holders


def test_a_bad_message_is_named_by_its_own_chunk(tmp_path):
    def payload(i: int, cls: Any) -> bytes:
        return b"\x0a\xff" if i == 23 else cls(frame_id="map").SerializeToString()

    path = tmp_path / "bad_payload.mcap"
    holders = _pose_file(path, payload, lambda i: field_logs.T0_NS + i * 10_000_000)
    assert len(set(holders)) > 5  # chunks are decoded together, errors still name one chunk
    result = _process(path, tmp_path / "staging")
    assert not result.ok and result.reason.startswith("payload on topic /pose does not decode")
    assert result.offset == holders[23]
    assert not any((tmp_path / "staging").rglob("*.parquet"))  # nothing of a bad file is kept

    path = tmp_path / "backwards.mcap"
    times = [field_logs.T0_NS + k * 10_000_000 for k in range(40)]
    times[31] = times[2]
    holders = _pose_file(path, lambda i, cls: cls(frame_id="map").SerializeToString(), times.__getitem__)
    result = _process(path, tmp_path / "staging2")
    assert not result.ok and result.reason == "non-monotonic log times on topic /pose"
    assert result.offset == holders[31]
