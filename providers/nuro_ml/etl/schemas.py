"""Topics, rates and message schemas of the drive logs.

Foxglove schemas cover pose, GNSS, lidar and camera. IMU and vehicle CAN state use our own
schemas, available both as Protobuf (``nuro.sensors.Imu`` / ``nuro.sensors.VehicleState``) and as
ROS 2 message definitions (``sensor_msgs/msg/Imu`` / ``nuro_msgs/msg/VehicleState``, CDR-encoded).
Both encodings flatten to the same signal column names, so the transforms do not care which one a
file uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from foxglove_schemas_protobuf.CompressedImage_pb2 import CompressedImage
from foxglove_schemas_protobuf.LocationFix_pb2 import LocationFix
from foxglove_schemas_protobuf.PointCloud_pb2 import PointCloud
from foxglove_schemas_protobuf.PoseInFrame_pb2 import PoseInFrame
from foxglove_schemas_protobuf.Quaternion_pb2 import Quaternion
from foxglove_schemas_protobuf.Vector3_pb2 import Vector3
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2
from google.protobuf.descriptor import FileDescriptor


@dataclass(frozen=True)
class TopicSpec:
    """A recorded topic: its nominal rate and the schema names accepted for it."""

    topic: str
    rate_hz: float
    table: str
    schema_names: tuple[str, ...]


TOPIC_POSE = "/ego/pose"
TOPIC_GNSS = "/gnss/fix"
TOPIC_IMU = "/imu"
TOPIC_CAN = "/vehicle/can"
TOPIC_LIDAR = "/lidar/top/points"
TOPIC_CAMERA = "/camera/front/compressed"

IMU_PROTO = "nuro.sensors.Imu"
CAN_PROTO = "nuro.sensors.VehicleState"
IMU_ROS2 = "sensor_msgs/msg/Imu"
CAN_ROS2 = "nuro_msgs/msg/VehicleState"

TOPICS: dict[str, TopicSpec] = {
    spec.topic: spec
    for spec in (
        TopicSpec(TOPIC_POSE, 100.0, "ego_pose", ("foxglove.PoseInFrame",)),
        TopicSpec(TOPIC_GNSS, 10.0, "gnss_fix", ("foxglove.LocationFix",)),
        TopicSpec(TOPIC_IMU, 200.0, "imu", (IMU_PROTO, IMU_ROS2)),
        TopicSpec(TOPIC_CAN, 100.0, "vehicle_can", (CAN_PROTO, CAN_ROS2)),
        TopicSpec(TOPIC_LIDAR, 10.0, "lidar_points", ("foxglove.PointCloud",)),
        TopicSpec(TOPIC_CAMERA, 10.0, "camera_frames", ("foxglove.CompressedImage",)),
    )
}

_SENSORS_PROTO_NAME = "nuro/sensors.proto"


def _sensors_file_proto() -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto(
        name=_SENSORS_PROTO_NAME,
        package="nuro.sensors",
        syntax="proto3",
        dependency=[
            timestamp_pb2.DESCRIPTOR.name,
            Vector3.DESCRIPTOR.file.name,
            Quaternion.DESCRIPTOR.file.name,
        ],
    )
    f = descriptor_pb2.FieldDescriptorProto
    opt = f.LABEL_OPTIONAL

    def add(msg: descriptor_pb2.DescriptorProto, name: str, number: int, ftype: int, tname: str = "") -> None:
        field = msg.field.add(name=name, number=number, label=opt, type=ftype)  # type: ignore[arg-type]
        if tname:
            field.type_name = tname

    imu = fdp.message_type.add(name="Imu")
    add(imu, "timestamp", 1, f.TYPE_MESSAGE, ".google.protobuf.Timestamp")
    add(imu, "frame_id", 2, f.TYPE_STRING)
    add(imu, "orientation", 3, f.TYPE_MESSAGE, ".foxglove.Quaternion")
    add(imu, "angular_velocity", 4, f.TYPE_MESSAGE, ".foxglove.Vector3")
    add(imu, "linear_acceleration", 5, f.TYPE_MESSAGE, ".foxglove.Vector3")

    can = fdp.message_type.add(name="VehicleState")
    add(can, "timestamp", 1, f.TYPE_MESSAGE, ".google.protobuf.Timestamp")
    add(can, "frame_id", 2, f.TYPE_STRING)
    add(can, "speed_mps", 3, f.TYPE_DOUBLE)
    add(can, "steering_angle_rad", 4, f.TYPE_DOUBLE)
    add(can, "throttle", 5, f.TYPE_DOUBLE)
    add(can, "brake_pressure_bar", 6, f.TYPE_DOUBLE)
    add(can, "gear", 7, f.TYPE_INT32)
    return fdp


@cache
def sensor_message_classes() -> dict[str, Any]:
    """Protobuf classes of our IMU and vehicle-state messages, built without generated code."""
    pool = descriptor_pool.DescriptorPool()
    for dep in (timestamp_pb2.DESCRIPTOR, Vector3.DESCRIPTOR.file, Quaternion.DESCRIPTOR.file):
        proto = descriptor_pb2.FileDescriptorProto()
        dep.CopyToProto(proto)
        pool.Add(proto)
    pool.Add(_sensors_file_proto())
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(name))
        for name in (IMU_PROTO, CAN_PROTO)
    }


def file_descriptor_set(message_class: Any) -> bytes:
    """Serialized ``FileDescriptorSet`` of a message class and its imports, as MCAP stores it."""
    fds = descriptor_pb2.FileDescriptorSet()
    seen: set[str] = set()

    def append(fd: FileDescriptor) -> None:
        for dep in fd.dependencies:
            if dep.name not in seen:
                seen.add(dep.name)
                append(dep)
        fd.CopyToProto(fds.file.add())

    append(message_class.DESCRIPTOR.file)
    return fds.SerializeToString()


#: ROS 2 message definitions in the concatenated form MCAP's ``ros2msg`` encoding uses.
_HEADER_DEFS = """
================================================================================
MSG: std_msgs/Header
builtin_interfaces/Time stamp
string frame_id
================================================================================
MSG: builtin_interfaces/Time
int32 sec
uint32 nanosec
"""

ROS2_IMU_DEF = (
    """std_msgs/Header header
geometry_msgs/Quaternion orientation
float64[9] orientation_covariance
geometry_msgs/Vector3 angular_velocity
float64[9] angular_velocity_covariance
geometry_msgs/Vector3 linear_acceleration
float64[9] linear_acceleration_covariance"""
    + _HEADER_DEFS
    + """================================================================================
MSG: geometry_msgs/Quaternion
float64 x 0
float64 y 0
float64 z 0
float64 w 1
================================================================================
MSG: geometry_msgs/Vector3
float64 x
float64 y
float64 z
"""
)

ROS2_CAN_DEF = (
    """# Vehicle state decoded from the CAN bus.
std_msgs/Header header
float64 speed_mps
float64 steering_angle_rad
float64 throttle
float64 brake_pressure_bar
int8 gear"""
    + _HEADER_DEFS
)

ROS2_DEFINITIONS: dict[str, str] = {IMU_ROS2: ROS2_IMU_DEF, CAN_ROS2: ROS2_CAN_DEF}

FOXGLOVE_CLASSES: dict[str, Any] = {
    TOPIC_POSE: PoseInFrame,
    TOPIC_GNSS: LocationFix,
    TOPIC_LIDAR: PointCloud,
    TOPIC_CAMERA: CompressedImage,
}
