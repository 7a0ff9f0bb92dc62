from __future__ import annotations

import hashlib
from collections import Counter
from datetime import date

import numpy as np
import pytest
from mcap.reader import make_reader
from mcap_protobuf.decoder import DecoderFactory as ProtobufDecoderFactory
from mcap_ros2.decoder import DecoderFactory as Ros2DecoderFactory
from nuro_ml.cli import main as cli_main
from nuro_ml.etl import kinematics, schemas
from nuro_ml.etl.generator import generate_interval

DAY = date(2024, 3, 1)
SMALL = {"lidar_points": 128, "image_bytes": 1024, "chunk_size": 32 << 10}


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _official_counts(path):
    """Messages per topic, decoded by the upstream mcap readers (validates the file format)."""
    counts: Counter[str] = Counter()
    with open(path, "rb") as fh:
        reader = make_reader(fh, decoder_factories=[ProtobufDecoderFactory(), Ros2DecoderFactory()])
        for _, channel, _, decoded in reader.iter_decoded_messages():
            assert decoded is not None
            counts[channel.topic] += 1
        summary = reader.get_summary()
    return counts, summary


@pytest.mark.parametrize(("encoding", "compression"), [("protobuf", "zstd"), ("ros2", "lz4")])
def test_topics_rates_and_encodings(tmp_path, encoding, compression):
    [path] = generate_interval(
        tmp_path,
        [DAY],
        ["veh-001"],
        drive_seconds=5,
        seed=1,
        encoding=encoding,
        compression=compression,
        **SMALL,
    )
    assert path == tmp_path / "date=2024-03-01" / "vehicle=veh-001" / "drv-20240301-00.mcap"
    counts, summary = _official_counts(path)
    assert counts == {topic: int(5 * spec.rate_hz) for topic, spec in schemas.TOPICS.items()}
    assert summary is not None and len(summary.chunk_indexes) > len(schemas.TOPICS)
    assert {c.compression for c in summary.chunk_indexes} == {compression}
    imu_schema = next(s for s in summary.schemas.values() if s.name in (schemas.IMU_PROTO, schemas.IMU_ROS2))
    assert imu_schema.encoding == ("ros2msg" if encoding == "ros2" else "protobuf")


def test_deterministic_and_idempotent(tmp_path):
    a = generate_interval(tmp_path / "a", [DAY], ["veh-001", "veh-002"], drive_seconds=3, seed=9, **SMALL)
    b = generate_interval(tmp_path / "b", [DAY], ["veh-001", "veh-002"], drive_seconds=3, seed=9, **SMALL)
    assert [_digest(p) for p in a] == [_digest(p) for p in b]
    assert _digest(a[0]) != _digest(a[1])  # vehicles differ

    mtimes = [p.stat().st_mtime_ns for p in a]
    again = generate_interval(tmp_path / "a", [DAY], ["veh-001", "veh-002"], drive_seconds=3, seed=9, **SMALL)
    assert again == a
    assert [p.stat().st_mtime_ns for p in a] == mtimes
    assert not list((tmp_path / "a").rglob(".*tmp*"))


def test_unindexed_file_is_valid_mcap(tmp_path):
    [path] = generate_interval(
        tmp_path, [DAY], ["veh-001"], drive_seconds=2, seed=1, write_summary=False, **SMALL
    )
    counts, summary = _official_counts(path)
    assert summary is None
    assert counts[schemas.TOPIC_IMU] == 400


def test_hard_brake_label_has_both_classes():
    traj = kinematics.simulate(120.0, np.random.default_rng(5))
    brake = kinematics.brake_pressure_bar(traj.accel)
    per_scene = brake.reshape(12, -1).max(axis=1)
    hard = per_scene > kinematics.HARD_BRAKE_BAR
    assert hard.any() and not hard.all()
    assert traj.speed.min() >= 0.0 and traj.speed.max() <= kinematics.V_MAX + 1e-6
    assert np.abs(np.diff(traj.speed)).max() * kinematics.SIM_HZ < 10.0  # no jumps in speed


def test_cli_gen_logs(tmp_path, capsys):
    rc = cli_main(
        ["gen-logs", "--out", str(tmp_path), "--dates", "2024-03-01..2024-03-02", "--vehicles", "2",
         "--seconds", "2", "--seed", "4", "--lidar-points", "64", "--image-bytes", "512"]
    )  # fmt: skip
    assert rc == 0
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.mcap"))
    assert files == [
        "date=2024-03-01/vehicle=veh-001/drv-20240301-00.mcap",
        "date=2024-03-01/vehicle=veh-002/drv-20240301-00.mcap",
        "date=2024-03-02/vehicle=veh-001/drv-20240302-00.mcap",
        "date=2024-03-02/vehicle=veh-002/drv-20240302-00.mcap",
    ]
    assert "4 drive logs" in capsys.readouterr().out


@pytest.mark.parametrize(("layout", "channels_per_chunk"), [("interleaved", 6), ("per-channel", 1)])
def test_layouts(tmp_path, layout, channels_per_chunk):
    from nuro_ml.etl import mcap_io

    kwargs = {} if layout == "interleaved" else {"layout": layout}  # interleaved is the default
    [path] = generate_interval(tmp_path, [DAY], ["veh-001"], drive_seconds=3, seed=1, **SMALL, **kwargs)
    with mcap_io.mapped(path) as buf:
        summary = mcap_io.read_summary(buf)
    assert summary is not None
    assert max(len(c.channel_ids or ()) for c in summary.chunks) == channels_per_chunk
    if layout == "interleaved":  # one time-ordered stream: chunks do not overlap in time
        assert all(
            a.end_time <= b.start_time for a, b in zip(summary.chunks, summary.chunks[1:], strict=False)
        )
    assert _official_counts(path)[0] == {
        topic: int(3 * spec.rate_hz) for topic, spec in schemas.TOPICS.items()
    }


def test_ros2_standard_encoding_maps_every_topic(tmp_path):
    from nuro_ml.etl import mapping
    from nuro_ml.etl.generator import ROS2_STANDARD_TOPICS
    from nuro_ml.etl.process import FileTask, process_file
    from nuro_ml.etl.transforms import TransformConfig

    [path] = generate_interval(
        tmp_path, [DAY], ["veh-001"], drive_seconds=3, seed=1, encoding="ros2-standard", **SMALL
    )
    counts, summary = _official_counts(path)  # decodable by the upstream ROS 2 decoder
    expected = {ROS2_STANDARD_TOPICS[t][0]: int(3 * spec.rate_hz) for t, spec in schemas.TOPICS.items()}
    assert counts == expected
    assert {s.name for s in summary.schemas.values()} == {name for _, name in ROS2_STANDARD_TOPICS.values()}
    task = FileTask(
        str(path), str(DAY), "veh-001", "d", str(tmp_path / "st"), mapping.builtin(), TransformConfig(), 0
    )
    result = process_file(task)
    assert result.ok
    for topic, (name, _) in ROS2_STANDARD_TOPICS.items():
        table = {"lidar_points": "lidar_payload", "camera_frames": "camera_payload"}.get(
            schemas.TOPICS[topic].table, schemas.TOPICS[topic].table
        )
        assert result.routes[name] == table and result.rows[table] == expected[name]
