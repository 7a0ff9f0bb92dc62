"""Deterministic synthetic drive logs (MCAP) with the topics and rates of the shared contract.

Every file is a function of (seed, date, vehicle, drive index, size parameters): rerunning with
the same arguments writes byte-identical files. :func:`generate_interval` is idempotent: it only
writes files that do not exist yet, each through a temporary file renamed into place, so a killed
run never leaves a partial ``.mcap`` where a reader would pick it up.
"""

from __future__ import annotations

import logging
import math
import os
import zlib
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from foxglove_schemas_protobuf.CompressedImage_pb2 import CompressedImage
from foxglove_schemas_protobuf.LocationFix_pb2 import LocationFix
from foxglove_schemas_protobuf.PackedElementField_pb2 import PackedElementField
from foxglove_schemas_protobuf.PointCloud_pb2 import PointCloud
from foxglove_schemas_protobuf.PoseInFrame_pb2 import PoseInFrame

from nuro_ml.etl import kinematics, schemas
from nuro_ml.etl.mcap_writer import ChunkedMcapWriter

log = logging.getLogger(__name__)

ENCODINGS = ("protobuf", "ros2", "mixed", "ros2-standard")
#: Topic names and standard ROS 2 types of ``encoding="ros2-standard"`` (Autoware-style names).
ROS2_STANDARD_TOPICS: dict[str, tuple[str, str]] = {
    schemas.TOPIC_POSE: ("/localization/kinematic_state", "nav_msgs/msg/Odometry"),
    schemas.TOPIC_GNSS: ("/sensing/gnss/ublox/nav_sat_fix", "sensor_msgs/msg/NavSatFix"),
    schemas.TOPIC_IMU: ("/sensing/imu/tamagawa/imu_raw", "sensor_msgs/msg/Imu"),
    schemas.TOPIC_CAN: ("/vehicle/status/can", schemas.CAN_ROS2),
    schemas.TOPIC_LIDAR: ("/sensing/lidar/top/pointcloud_raw", "sensor_msgs/msg/PointCloud2"),
    schemas.TOPIC_CAMERA: ("/sensing/camera/front/image_raw/compressed", "sensor_msgs/msg/CompressedImage"),
}
GENERATOR_VERSION = "1"
_EARTH_RADIUS_M = 6_378_137.0
#: City origins the synthetic fleet drives around (lat, lon, altitude).
_ORIGINS = ((37.7749, -122.4194, 16.0), (37.3894, -122.0819, 32.0), (29.7604, -95.3698, 15.0))


@dataclass(frozen=True)
class DriveSpec:
    """Parameters of one synthetic drive (one MCAP file)."""

    vehicle_id: str
    day: date
    drive_index: int
    drive_seconds: float
    seed: int
    lidar_points: int = 4096
    image_bytes: int = 16_384
    encoding: str = "protobuf"
    compression: str = "zstd"
    chunk_size: int = 1 << 20
    write_summary: bool = True
    layout: str = "interleaved"

    @property
    def drive_id(self) -> str:
        return f"drv-{self.day:%Y%m%d}-{self.drive_index:02d}"

    def rng(self) -> np.random.Generator:
        ss = np.random.SeedSequence(
            [self.seed, self.day.toordinal(), zlib.crc32(self.vehicle_id.encode()), self.drive_index]
        )
        return np.random.default_rng(ss)

    def start_ns(self) -> int:
        """Drive start: morning of ``day`` (UTC), staggered per vehicle and drive."""
        offset_s = (
            7 * 3600
            + (zlib.crc32(self.vehicle_id.encode()) % 7200)
            + self.drive_index * (math.ceil(self.drive_seconds) + 1800)
        )
        start = datetime.combine(self.day, time(0), tzinfo=UTC) + timedelta(seconds=offset_s)
        end = start + timedelta(seconds=self.drive_seconds + 1)
        if end.date() != self.day:
            raise ValueError(
                f"drive {self.drive_index} of {self.vehicle_id} on {self.day} would run past midnight UTC; "
                "use fewer drives per day or shorter drives"
            )
        return int(start.timestamp()) * 1_000_000_000


def drive_path(raw_root: Path, spec: DriveSpec) -> Path:
    """Location of a drive's file under the contract layout ``date=/vehicle=/<drive_id>.mcap``."""
    return raw_root / f"date={spec.day:%Y-%m-%d}" / f"vehicle={spec.vehicle_id}" / f"{spec.drive_id}.mcap"


def _ts(msg: Any, ns: int) -> None:
    msg.timestamp.seconds = ns // 1_000_000_000
    msg.timestamp.nanos = ns % 1_000_000_000


def _sample_times(
    t0_ns: int, n_sim: int, step: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Simulation indices and log times of a topic sampled every ``step`` simulation ticks.

    Sensor latency jitter stays below a fifth of the period so log times remain strictly increasing.
    """
    idx = np.arange(0, n_sim, step)
    period_ns = int(step * 1e9 / kinematics.SIM_HZ)
    jitter = rng.integers(0, max(1, period_ns // 5), size=idx.shape[0])
    return idx, t0_ns + idx.astype(np.int64) * (period_ns // step) + jitter


class _DriveWriter:
    """Registers the drive's schemas and channels and encodes each topic's messages."""

    def __init__(self, writer: ChunkedMcapWriter, ros2: bool, standard: bool = False) -> None:
        self.writer = writer
        self.ros2 = ros2 or standard
        self.standard = standard
        self.channels: dict[str, int] = {}
        self.seq: dict[str, int] = {}
        self.encoders: dict[str, Any] = {}
        if standard:
            from mcap_ros2._dynamic import serialize_dynamic

            from nuro_ml.etl.ros2_types import definition

            for topic, (name, type_name) in ROS2_STANDARD_TOPICS.items():
                text = (
                    schemas.ROS2_DEFINITIONS[type_name]
                    if type_name == schemas.CAN_ROS2
                    else definition(type_name)
                )
                sid = writer.register_schema(type_name, "ros2msg", text.encode())
                self.channels[topic] = writer.register_channel(name, "cdr", sid)
                self.encoders[topic] = serialize_dynamic(type_name, text)[type_name]
            return
        for topic, cls in schemas.FOXGLOVE_CLASSES.items():
            sid = writer.register_schema(
                cls.DESCRIPTOR.full_name, "protobuf", schemas.file_descriptor_set(cls)
            )
            self.channels[topic] = writer.register_channel(topic, "protobuf", sid)
        if ros2:
            from mcap_ros2._dynamic import serialize_dynamic

            for topic, name in ((schemas.TOPIC_IMU, schemas.IMU_ROS2), (schemas.TOPIC_CAN, schemas.CAN_ROS2)):
                text = schemas.ROS2_DEFINITIONS[name]
                sid = writer.register_schema(name, "ros2msg", text.encode())
                self.channels[topic] = writer.register_channel(topic, "cdr", sid)
                self.encoders[topic] = serialize_dynamic(name, text)[name]
        else:
            classes = schemas.sensor_message_classes()
            for topic, name in (
                (schemas.TOPIC_IMU, schemas.IMU_PROTO),
                (schemas.TOPIC_CAN, schemas.CAN_PROTO),
            ):
                sid = writer.register_schema(name, "protobuf", schemas.file_descriptor_set(classes[name]))
                self.channels[topic] = writer.register_channel(topic, "protobuf", sid)

    def write(self, topic: str, log_time: int, data: bytes) -> None:
        seq = self.seq.get(topic, 0)
        self.seq[topic] = seq + 1
        self.writer.add_message(self.channels[topic], log_time, data, log_time, seq)


def _lidar_cloud(rng: np.random.Generator, n: int) -> bytes:
    """A ring of returns around the vehicle: ground points plus a few vertical obstacles."""
    az = rng.uniform(-np.pi, np.pi, n).astype(np.float32)
    rng_m = (2.5 + rng.gamma(2.0, 9.0, n)).astype(np.float32)
    elev = rng.uniform(-0.4, 0.1, n).astype(np.float32)
    pts = np.empty((n, 4), dtype=np.float32)
    pts[:, 0] = rng_m * np.cos(az)
    pts[:, 1] = rng_m * np.sin(az)
    pts[:, 2] = np.maximum(-1.8, rng_m * np.tan(elev))
    pts[:, 3] = rng.uniform(0.0, 1.0, n).astype(np.float32)
    return pts.tobytes()


def _jpeg_like(rng: np.random.Generator, size: int) -> bytes:
    """Opaque image payload with JPEG framing (SOI/APP0 ... EOI); compressed images are incompressible."""
    head = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    body = max(0, size - len(head) - 2)
    return head + rng.bytes(body) + b"\xff\xd9"


def write_drive(stream: Any, spec: DriveSpec) -> dict[str, int]:
    """Write one drive to an open binary stream; returns message counts per topic."""
    rng = spec.rng()
    traj = kinematics.simulate(spec.drive_seconds, rng)
    n_sim = traj.t.shape[0]
    t0 = spec.start_ns()
    standard = spec.encoding == "ros2-standard"
    ros2 = spec.encoding == "ros2" or standard
    writer = ChunkedMcapWriter(
        stream,
        profile="ros2" if standard else "",
        chunk_size=spec.chunk_size,
        compression=spec.compression,
        library=f"nuro-ml-generator/{GENERATOR_VERSION}",
        write_summary=spec.write_summary,
        layout=spec.layout,
    )
    writer.add_metadata(
        "drive",
        {
            "vehicle_id": spec.vehicle_id,
            "drive_id": spec.drive_id,
            "seed": str(spec.seed),
            "generator": GENERATOR_VERSION,
        },
    )
    dw = _DriveWriter(writer, ros2, standard)
    quat = kinematics.quaternion_from_yaw_pitch(traj.yaw, traj.pitch)
    lat0, lon0, alt0 = _ORIGINS[zlib.crc32(spec.vehicle_id.encode()) % len(_ORIGINS)]

    events: list[tuple[int, int, str, int]] = []  # (log_time, topic order, topic, sim index)
    steps = {
        schemas.TOPIC_POSE: 2,
        schemas.TOPIC_IMU: 1,
        schemas.TOPIC_CAN: 2,
        schemas.TOPIC_GNSS: 20,
        schemas.TOPIC_LIDAR: 20,
        schemas.TOPIC_CAMERA: 20,
    }
    for order, (topic, step) in enumerate(steps.items()):
        idx, times = _sample_times(t0, n_sim, step, rng)
        events.extend(zip(times.tolist(), [order] * len(idx), [topic] * len(idx), idx.tolist(), strict=True))
    events.sort()

    # GNSS outages (tunnels, urban canyons): the receiver reports no usable covariance.
    gnss_bad = np.zeros(n_sim, dtype=bool)
    for _ in range(rng.poisson(spec.drive_seconds / 90.0)):
        s = int(rng.integers(0, n_sim))
        gnss_bad[s : s + int(rng.uniform(2.0, 8.0) * kinematics.SIM_HZ)] = True
    noise = rng.normal(size=(n_sim, 6))
    brake = kinematics.brake_pressure_bar(traj.accel)
    lateral = traj.lateral_accel
    steer = kinematics.steering_angle_rad(traj.curvature)

    pose = PoseInFrame(frame_id="map")
    fix = LocationFix(frame_id="gnss")
    cloud = PointCloud(frame_id="lidar_top", point_stride=16)
    cloud.pose.orientation.w = 1.0
    for i, name in enumerate("xyz"):
        cloud.fields.add(name=name, offset=4 * i, type=PackedElementField.FLOAT32)
    cloud.fields.add(name="intensity", offset=12, type=PackedElementField.FLOAT32)
    image = CompressedImage(frame_id="camera_front", format="jpeg")
    classes = schemas.sensor_message_classes()
    imu = classes[schemas.IMU_PROTO](frame_id="imu")
    can = classes[schemas.CAN_PROTO](frame_id="base_link")

    for log_time, _, topic, i in events:
        if topic == schemas.TOPIC_POSE:
            _ts(pose, log_time)
            p = pose.pose.position
            p.x, p.y, p.z = float(traj.x[i]), float(traj.y[i]), float(traj.z[i])
            q = pose.pose.orientation
            q.x, q.y, q.z, q.w = (float(v) for v in quat[i])
            data = pose.SerializeToString()
        elif topic == schemas.TOPIC_IMU:
            gyro_z = float(traj.yaw_rate[i] + 0.002 * noise[i, 0])
            acc_x = float(traj.accel[i] + 0.05 * noise[i, 1])
            acc_y = float(lateral[i] + 0.05 * noise[i, 2])
            acc_z = float(9.80665 + 0.05 * noise[i, 3])
            if ros2:
                data = dw.encoders[topic](
                    {
                        "header": {
                            "stamp": {"sec": log_time // 10**9, "nanosec": log_time % 10**9},
                            "frame_id": "imu",
                        },
                        "orientation": dict(zip("xyzw", (float(v) for v in quat[i]), strict=True)),
                        "orientation_covariance": [0.0] * 9,
                        "angular_velocity": {"x": 0.001 * float(noise[i, 4]), "y": 0.0, "z": gyro_z},
                        "angular_velocity_covariance": [0.0] * 9,
                        "linear_acceleration": {"x": acc_x, "y": acc_y, "z": acc_z},
                        "linear_acceleration_covariance": [0.0] * 9,
                    }
                )
            else:
                _ts(imu, log_time)
                o = imu.orientation
                o.x, o.y, o.z, o.w = (float(v) for v in quat[i])
                imu.angular_velocity.x = 0.001 * float(noise[i, 4])
                imu.angular_velocity.z = gyro_z
                la = imu.linear_acceleration
                la.x, la.y, la.z = acc_x, acc_y, acc_z
                data = imu.SerializeToString()
        elif topic == schemas.TOPIC_CAN:
            speed = max(0.0, float(traj.speed[i] + 0.02 * noise[i, 5]))
            throttle = float(np.clip(traj.accel[i] / 3.0, 0.0, 1.0))
            values = {
                "speed_mps": speed,
                "steering_angle_rad": float(steer[i]),
                "throttle": throttle,
                "brake_pressure_bar": float(brake[i]),
            }
            if ros2:
                data = dw.encoders[topic](
                    {
                        "header": {
                            "stamp": {"sec": log_time // 10**9, "nanosec": log_time % 10**9},
                            "frame_id": "base_link",
                        },
                        **values,
                        "gear": 1,
                    }
                )
            else:
                _ts(can, log_time)
                for k, v in values.items():
                    setattr(can, k, v)
                can.gear = 1
                data = can.SerializeToString()
        elif topic == schemas.TOPIC_GNSS:
            _ts(fix, log_time)
            bad = bool(gnss_bad[i])
            sigma = float(rng.uniform(12.0, 30.0) if bad else rng.uniform(0.4, 1.6))
            north = float(traj.y[i] + sigma * rng.normal())
            east = float(traj.x[i] + sigma * rng.normal())
            fix.latitude = lat0 + math.degrees(north / _EARTH_RADIUS_M)
            fix.longitude = lon0 + math.degrees(east / (_EARTH_RADIUS_M * math.cos(math.radians(lat0))))
            fix.altitude = alt0 + float(traj.z[i])
            del fix.position_covariance[:]
            fix.position_covariance.extend(
                [sigma**2, 0.0, 0.0, 0.0, sigma**2, 0.0, 0.0, 0.0, (2 * sigma) ** 2]
            )
            fix.position_covariance_type = LocationFix.UNKNOWN if bad else LocationFix.DIAGONAL_KNOWN
            data = fix.SerializeToString()
        elif topic == schemas.TOPIC_LIDAR:
            _ts(cloud, log_time)
            n_points = max(1, int(spec.lidar_points * (1.0 - rng.uniform(0.0, 0.05))))
            cloud.data = _lidar_cloud(rng, n_points)
            data = cloud.SerializeToString()
        else:
            _ts(image, log_time)
            image.data = _jpeg_like(rng, int(spec.image_bytes * rng.uniform(0.9, 1.1)))
            data = image.SerializeToString()
        if standard and topic in _TO_STANDARD:
            obj = {schemas.TOPIC_POSE: pose, schemas.TOPIC_GNSS: fix, schemas.TOPIC_LIDAR: cloud}.get(
                topic, image
            )
            data = dw.encoders[topic](_TO_STANDARD[topic](obj, log_time))
        dw.write(topic, log_time, data)
    writer.finish()
    if standard:
        return {ROS2_STANDARD_TOPICS[t][0]: n for t, n in dw.seq.items()}
    return dict(dw.seq)


def _header(log_time: int, frame_id: str) -> dict[str, Any]:
    return {"stamp": {"sec": log_time // 10**9, "nanosec": log_time % 10**9}, "frame_id": frame_id}


def _odometry(pose: Any, log_time: int) -> dict[str, Any]:
    p, q = pose.pose.position, pose.pose.orientation
    zero3 = {"x": 0.0, "y": 0.0, "z": 0.0}
    return {
        "header": _header(log_time, pose.frame_id),
        "child_frame_id": "base_link",
        "pose": {
            "pose": {
                "position": {"x": p.x, "y": p.y, "z": p.z},
                "orientation": {"x": q.x, "y": q.y, "z": q.z, "w": q.w},
            },
            "covariance": [0.0] * 36,
        },
        "twist": {"twist": {"linear": zero3, "angular": zero3}, "covariance": [0.0] * 36},
    }


def _nav_sat_fix(fix: Any, log_time: int) -> dict[str, Any]:
    valid = fix.position_covariance_type != LocationFix.UNKNOWN
    return {
        "header": _header(log_time, fix.frame_id),
        # NavSatStatus: STATUS_FIX 0, STATUS_NO_FIX -1; SERVICE_GPS 1.
        "status": {"status": 0 if valid else -1, "service": 1},
        "latitude": fix.latitude,
        "longitude": fix.longitude,
        "altitude": fix.altitude,
        "position_covariance": list(fix.position_covariance),
        "position_covariance_type": int(fix.position_covariance_type),
    }


def _point_cloud2(cloud: Any, log_time: int) -> dict[str, Any]:
    n = len(cloud.data) // cloud.point_stride
    return {
        "header": _header(log_time, cloud.frame_id),
        "height": 1,
        "width": n,
        # PointField.FLOAT32 is 7, as Foxglove's PackedElementField.FLOAT32.
        "fields": [{"name": f.name, "offset": f.offset, "datatype": 7, "count": 1} for f in cloud.fields],
        "is_bigendian": False,
        "point_step": cloud.point_stride,
        "row_step": cloud.point_stride * n,
        "data": cloud.data,
        "is_dense": True,
    }


def _compressed_image(image: Any, log_time: int) -> dict[str, Any]:
    return {"header": _header(log_time, image.frame_id), "format": image.format, "data": image.data}


_TO_STANDARD = {
    schemas.TOPIC_POSE: _odometry,
    schemas.TOPIC_GNSS: _nav_sat_fix,
    schemas.TOPIC_LIDAR: _point_cloud2,
    schemas.TOPIC_CAMERA: _compressed_image,
}


def write_drive_file(path: Path, spec: DriveSpec) -> bool:
    """Write ``spec`` to ``path`` atomically; ``False`` if the file already exists."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            write_drive(fh, spec)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return True


def _write_one(args: tuple[Path, DriveSpec]) -> bool:
    return write_drive_file(*args)


def generate_interval(
    raw_root: Path,
    dates: Sequence[date],
    vehicles: Sequence[str],
    *,
    drive_seconds: float,
    seed: int,
    drives_per_day: int = 1,
    lidar_points: int = 4096,
    image_bytes: int = 16_384,
    encoding: str = "protobuf",
    compression: str = "zstd",
    chunk_size: int = 1 << 20,
    write_summary: bool = True,
    workers: int = 1,
    layout: str = "interleaved",
) -> list[Path]:
    """Make sure the drive logs of ``dates`` x ``vehicles`` exist under ``raw_root``.

    Only missing files are written (each atomically), so calling this again for the same interval
    is cheap and never rewrites a file a reader may be using.

    :param raw_root: root of the raw layout ``date=YYYY-MM-DD/vehicle=<id>/<drive_id>.mcap``.
    :param dates: days to generate.
    :param vehicles: vehicle ids.
    :param drive_seconds: length of each drive.
    :param seed: base seed; every file derives its own from (seed, date, vehicle, drive index).
    :param drives_per_day: drives per vehicle and day.
    :param lidar_points: nominal points per lidar cloud (16 bytes each).
    :param image_bytes: nominal bytes per camera frame.
    :param encoding: ``protobuf``, ``ros2`` (IMU and CAN as CDR), ``mixed`` (alternate per vehicle)
        or ``ros2-standard`` (every topic as rosbag2 records it: standard ROS 2 types with their real
        message definitions, CDR, Autoware-style topic names; CAN stays our own type).
    :param compression: chunk compression, ``zstd``, ``lz4`` or ``none``.
    :param chunk_size: uncompressed bytes per chunk.
    :param write_summary: write the summary section (chunk index); ``False`` writes unindexed files.
    :param workers: processes used to write files in parallel.
    :param layout: ``interleaved`` (one time-ordered chunk stream, as recorders write) or
        ``per-channel`` (one chunk stream per channel).
    :return: every file of the interval (existing and new), sorted.
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"unsupported encoding {encoding!r}; expected one of {ENCODINGS}")
    jobs: list[tuple[Path, DriveSpec]] = []
    for day in dates:
        for v_index, vehicle in enumerate(vehicles):
            enc = encoding if encoding != "mixed" else ("protobuf", "ros2")[v_index % 2]
            for k in range(drives_per_day):
                spec = DriveSpec(
                    vehicle_id=vehicle,
                    day=day,
                    drive_index=k,
                    drive_seconds=drive_seconds,
                    seed=seed,
                    lidar_points=lidar_points,
                    image_bytes=image_bytes,
                    encoding=enc,
                    compression=compression,
                    chunk_size=chunk_size,
                    write_summary=write_summary,
                    layout=layout,
                )
                jobs.append((drive_path(Path(raw_root), spec), spec))
    missing = [job for job in jobs if not job[0].exists()]
    log.info("Drive logs: %d in interval, %d to write under %s", len(jobs), len(missing), raw_root)
    if workers > 1 and len(missing) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            list(pool.map(_write_one, missing))
    else:
        for job in missing:
            _write_one(job)
    return sorted(path for path, _ in jobs)
