"""Drive logs shaped like the field's, written with the upstream writers.

* :func:`write_ros2`: what rosbag2's MCAP storage writes: ``mcap_ros2.writer.Writer``, the
  standard message definitions (``ros2msg`` text with every dependency), CDR, Autoware-style
  topic names, one time-ordered chunk stream for all channels (``interleaved``), or one channel
  per chunk (``per-channel``, as our generator used to write).
* :func:`write_foxglove`: ``mcap_protobuf.writer.Writer`` with the ``foxglove-schemas-protobuf``
  classes, interleaved.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from mcap.writer import CompressionType
from nuro_ml.etl.ros2_types import definition

T0_NS = 1_732_464_000 * 1_000_000_000  # 2024-11-24T16:00:00Z

#: (topic, schema, rate Hz) of the ROS 2 recording.
ROS2_TOPICS: list[tuple[str, str, float]] = [
    ("/sensing/imu/tamagawa/imu_raw", "sensor_msgs/msg/Imu", 50.0),
    ("/sensing/gnss/ublox/nav_sat_fix", "sensor_msgs/msg/NavSatFix", 5.0),
    ("/localization/kinematic_state", "nav_msgs/msg/Odometry", 20.0),
    ("/sensing/lidar/top/pointcloud_raw", "sensor_msgs/msg/PointCloud2", 5.0),
    ("/sensing/camera/front/image_raw/compressed", "sensor_msgs/msg/CompressedImage", 5.0),
    ("/tf", "tf2_msgs/msg/TFMessage", 10.0),
    ("/vehicle/status/twist", "geometry_msgs/msg/TwistStamped", 10.0),
]
COMPRESSIONS = {"zstd": CompressionType.ZSTD, "lz4": CompressionType.LZ4, "none": CompressionType.NONE}


def _stamp(t_ns: int) -> dict[str, int]:
    return {"sec": t_ns // 1_000_000_000, "nanosec": t_ns % 1_000_000_000}


def _header(t_ns: int, frame: str) -> dict[str, Any]:
    return {"stamp": _stamp(t_ns), "frame_id": frame}


def _quat(yaw: float) -> dict[str, float]:
    return {"x": 0.0, "y": 0.0, "z": math.sin(yaw / 2), "w": math.cos(yaw / 2)}


def _cloud(i: int) -> bytes:
    rng = np.random.default_rng(i)
    pts = rng.normal(0, 10, (32, 4)).astype(np.float32)
    return pts.tobytes()


def ros2_message(schema: str, i: int, t_ns: int) -> dict[str, Any]:
    """A plausible message of ``schema`` (the ``i``-th on its topic, stamped ``t_ns``)."""
    s = t_ns / 1e9 - T0_NS / 1e9
    if schema == "sensor_msgs/msg/Imu":
        return {
            "header": _header(t_ns, "imu_link"),
            "orientation": _quat(0.01 * i),
            "orientation_covariance": [0.0] * 9,
            "angular_velocity": {"x": 0.001 * i, "y": -0.002, "z": 0.05 * math.sin(s)},
            "angular_velocity_covariance": [0.0] * 9,
            "linear_acceleration": {"x": 0.3 * math.cos(s), "y": 0.1, "z": 9.81},
            "linear_acceleration_covariance": [0.0] * 9,
        }
    if schema == "sensor_msgs/msg/NavSatFix":
        return {
            "header": _header(t_ns, "gnss_link"),
            "status": {"status": -1 if i % 7 == 3 else 0, "service": 1},
            "latitude": 37.4 + 1e-5 * i,
            "longitude": -122.1 - 1e-5 * i,
            "altitude": 12.5 + 0.01 * i,
            "position_covariance": [0.25, 0, 0, 0, 0.36, 0, 0, 0, 1.0],
            "position_covariance_type": 2,
        }
    if schema == "nav_msgs/msg/Odometry":
        return {
            "header": _header(t_ns, "map"),
            "child_frame_id": "base_link",
            "pose": {
                "pose": {
                    "position": {"x": 8.0 * s, "y": 0.5 * s * s, "z": 0.0},
                    "orientation": _quat(0.1 * s),
                },
                "covariance": [0.0] * 36,
            },
            "twist": {
                "twist": {"linear": {"x": 8.0, "y": s, "z": 0.0}, "angular": {"x": 0.0, "y": 0.0, "z": 0.1}},
                "covariance": [0.0] * 36,
            },
        }
    if schema == "sensor_msgs/msg/PointCloud2":
        fields = [
            {"name": n, "offset": 4 * k, "datatype": 7, "count": 1}
            for k, n in enumerate(("x", "y", "z", "intensity"))
        ]
        return {
            "header": _header(t_ns, "lidar_top"),
            "height": 1,
            "width": 32,
            "fields": fields,
            "is_bigendian": False,
            "point_step": 16,
            "row_step": 16 * 32,
            "data": _cloud(i),
            "is_dense": True,
        }
    if schema == "sensor_msgs/msg/CompressedImage":
        return {
            "header": _header(t_ns, "camera_front"),
            "format": "jpeg",
            "data": bytes([i % 256]) * (100 + i),
        }
    if schema == "tf2_msgs/msg/TFMessage":
        return {
            "transforms": [
                {
                    "header": _header(t_ns, "map"),
                    "child_frame_id": f"link_{k}",
                    "transform": {
                        "translation": {"x": float(i), "y": float(k), "z": 0.0},
                        "rotation": _quat(0.0),
                    },
                }
                for k in range(1 + i % 3)
            ]
        }
    if schema == "geometry_msgs/msg/TwistStamped":
        return {
            "header": _header(t_ns, "base_link"),
            "twist": {
                "linear": {"x": 8.0, "y": 0.0, "z": 0.0},
                "angular": {"x": 0.0, "y": 0.0, "z": 0.01 * i},
            },
        }
    raise KeyError(schema)


def _schedule(topics: list[tuple[str, str, float]], seconds: float) -> list[tuple[int, str, str, int]]:
    """(log time, topic, schema, index) of every message, time-ordered."""
    out = []
    for topic, schema, hz in topics:
        step = round(1e9 / hz)
        for i in range(int(seconds * hz)):
            out.append((T0_NS + i * step + 1000 * len(topic), topic, schema, i))
    return sorted(out)


def write_ros2(
    path: Path,
    *,
    seconds: float = 6.0,
    layout: str = "interleaved",
    compression: str = "zstd",
    chunk_size: int = 16 << 10,
    topics: list[tuple[str, str, float]] | None = None,
    extra: Callable[[Any], None] | None = None,
) -> dict[str, int]:
    """Write a rosbag2-style recording; returns messages per topic."""
    from mcap_ros2.writer import Writer

    topics = ROS2_TOPICS if topics is None else topics
    schedule = _schedule(topics, seconds)
    if layout == "per-channel":
        order = {topic: k for k, (topic, _, _) in enumerate(topics)}
        schedule.sort(key=lambda m: (order[m[1]], m[0]))
    elif layout != "interleaved":
        raise ValueError(layout)
    path.parent.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    with open(path, "wb") as fh:
        writer = Writer(fh, chunk_size=chunk_size, compression=COMPRESSIONS[compression])
        schemas = {name: writer.register_msgdef(name, definition(name)) for _, name, _ in topics}
        previous = None
        for log_time, topic, schema, i in schedule:
            if layout == "per-channel" and previous is not None and topic != previous:
                # One channel per chunk: close the chunk at each change of channel.
                writer._writer._Writer__finalize_chunk()  # type: ignore[attr-defined]
            previous = topic
            writer.write_message(
                topic,
                schemas[schema],
                ros2_message(schema, i, log_time),
                log_time=log_time,
                publish_time=log_time,
            )
            counts[topic] = counts.get(topic, 0) + 1
        if extra is not None:
            extra(writer)
        writer.finish()
    return counts


def write_foxglove(path: Path, *, seconds: float = 4.0, compression: str = "zstd") -> dict[str, int]:
    """Write a Foxglove-protobuf recording (interleaved); returns messages per topic."""
    from foxglove_schemas_protobuf.CompressedImage_pb2 import CompressedImage
    from foxglove_schemas_protobuf.FrameTransforms_pb2 import FrameTransforms
    from foxglove_schemas_protobuf.LocationFix_pb2 import LocationFix
    from foxglove_schemas_protobuf.PackedElementField_pb2 import PackedElementField
    from foxglove_schemas_protobuf.PointCloud_pb2 import PointCloud
    from foxglove_schemas_protobuf.PoseInFrame_pb2 import PoseInFrame
    from foxglove_schemas_protobuf.RawImage_pb2 import RawImage
    from mcap_protobuf.writer import Writer

    topics = [
        ("/pose", 20.0),
        ("/gps", 5.0),
        ("/points", 5.0),
        ("/camera/jpeg", 5.0),
        ("/camera/raw", 2.0),
        ("/tf", 10.0),
    ]
    schedule = sorted(
        (T0_NS + i * round(1e9 / hz) + 1000 * k, topic, i)
        for k, (topic, hz) in enumerate(topics)
        for i in range(int(seconds * hz))
    )
    counts: dict[str, int] = {}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        writer = Writer(fh, chunk_size=16 << 10, compression=COMPRESSIONS[compression])
        for t, topic, i in schedule:
            s = (t - T0_NS) / 1e9
            msg: Any
            if topic == "/pose":
                msg = PoseInFrame(frame_id="map")
                msg.pose.position.x, msg.pose.position.y = 8.0 * s, 0.5 * s * s
                msg.pose.orientation.z, msg.pose.orientation.w = math.sin(0.05 * s), math.cos(0.05 * s)
            elif topic == "/gps":
                msg = LocationFix(
                    frame_id="gps",
                    latitude=37.0 + 1e-5 * i,
                    longitude=-122.0,
                    altitude=3.0,
                    position_covariance=[0.25, 0, 0, 0, 0.36, 0, 0, 0, 1.0],
                    position_covariance_type=2,
                )
            elif topic == "/points":
                msg = PointCloud(
                    frame_id="lidar",
                    point_stride=16,
                    fields=[
                        PackedElementField(name=n, offset=4 * k, type=PackedElementField.FLOAT32)
                        for k, n in enumerate(("x", "y", "z", "intensity"))
                    ],
                    data=_cloud(i),
                )
            elif topic == "/camera/jpeg":
                msg = CompressedImage(frame_id="cam", format="jpeg", data=bytes([i]) * (50 + i))
            elif topic == "/camera/raw":
                msg = RawImage(frame_id="cam", width=4, height=2, encoding="mono8", step=4, data=bytes(8))
            else:
                msg = FrameTransforms()
                for k, child in enumerate(("base_link", "lidar")):
                    tf = msg.transforms.add(parent_frame_id="map", child_frame_id=child)
                    tf.timestamp.FromNanoseconds(t + k * 1000)
                    tf.translation.x, tf.translation.y, tf.translation.z = float(i), -0.5 * k, 1.25
                    tf.rotation.z, tf.rotation.w = math.sin(0.01 * i), math.cos(0.01 * i)
            msg_time = getattr(msg, "timestamp", None)
            if msg_time is not None:
                msg_time.FromNanoseconds(t)
            writer.write_message(topic, msg, log_time=t, publish_time=t)
            counts[topic] = counts.get(topic, 0) + 1
        writer.finish()
    return counts
