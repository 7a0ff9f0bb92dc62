from __future__ import annotations

import json
from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from nuro_ml.etl import publish, schemas, transforms
from nuro_ml.etl.generator import generate_interval
from nuro_ml.etl.validation import inspect_file, quarantine

from tests.unit.etl import bad_files

DAY = date(2024, 3, 1)
SMALL = {"lidar_points": 128, "image_bytes": 1024, "chunk_size": 32 << 10}


@pytest.fixture(scope="module")
def good_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    [path] = generate_interval(
        root, [DAY], ["veh-001"], drive_seconds=4, seed=2, layout="per-channel", **SMALL
    )
    return path


def test_good_file_report(good_file):
    report = inspect_file(str(good_file))
    assert report.ok and report.indexed and report.reason is None
    assert report.messages == {topic: int(4 * spec.rate_hz) for topic, spec in schemas.TOPICS.items()}
    assert report.schemas[schemas.TOPIC_IMU] == schemas.IMU_PROTO


def test_bad_files_are_named_with_reason_and_offset(tmp_path, good_file):
    size = bad_files.truncate(good_file, tmp_path / "truncated.mcap")
    report = inspect_file(str(tmp_path / "truncated.mcap"))
    assert not report.ok and "truncated" in report.reason and 0 < report.offset < size

    chunk_offset = bad_files.corrupt_chunk(good_file, tmp_path / "corrupt.mcap")
    report = inspect_file(str(tmp_path / "corrupt.mcap"))
    assert not report.ok and report.offset == chunk_offset
    assert "chunk" in report.reason

    bad_files.unknown_schema(tmp_path / "unknown.mcap")
    report = inspect_file(str(tmp_path / "unknown.mcap"))
    assert not report.ok and report.reason == "unknown schema 'foxglove.Log' for topic /imu"

    bad_files.non_monotonic(tmp_path / "backwards.mcap")
    report = inspect_file(str(tmp_path / "backwards.mcap"))
    assert not report.ok and report.reason == "non-monotonic log times on topic /ego/pose"

    (tmp_path / "empty.mcap").write_bytes(b"")
    assert inspect_file(str(tmp_path / "empty.mcap")).reason == "empty file"


def _stream_counts(path):
    """Messages per topic that the upstream streaming reader yields before the file ends early."""
    from mcap.exceptions import EndOfFile
    from mcap.records import Channel, Message
    from mcap.stream_reader import StreamReader

    topics: dict[int, str] = {}
    counts: dict[str, int] = {}
    with open(path, "rb") as fh, pytest.raises(EndOfFile):
        for record in StreamReader(fh).records:
            if isinstance(record, Channel):
                topics[record.id] = record.topic
            elif isinstance(record, Message):
                topic = topics[record.channel_id]
                counts[topic] = counts.get(topic, 0) + 1
    return counts


def test_truncated_tail_lists_the_valid_messages_before_the_damage(tmp_path, good_file):
    bad_files.truncate(good_file, tmp_path / "truncated.mcap")
    report = inspect_file(str(tmp_path / "truncated.mcap"))
    assert not report.ok and not report.indexed
    assert report.salvaged == _stream_counts(tmp_path / "truncated.mcap")
    assert 0 < sum(report.salvaged.values()) < sum(inspect_file(str(good_file)).messages.values())

    # Damage inside an indexed file, or a bad message before the damage: nothing is kept.
    bad_files.corrupt_chunk(good_file, tmp_path / "corrupt.mcap")
    assert inspect_file(str(tmp_path / "corrupt.mcap")).salvaged == {}


def test_quarantine_moves_file_and_writes_manifest(tmp_path, good_file):
    raw = tmp_path / "raw" / "date=2024-03-01" / "vehicle=veh-001"
    raw.mkdir(parents=True)
    bad_files.truncate(good_file, raw / "drv-x.mcap")
    report = inspect_file(str(raw / "drv-x.mcap"))
    entry = quarantine(report, tmp_path / "raw", tmp_path / "q", "run-1")
    assert entry == {
        "file": str(raw / "drv-x.mcap"),
        "reason": report.reason,
        "offset": report.offset,
        "salvaged_messages": report.salvaged,
    }
    assert not (raw / "drv-x.mcap").exists()
    assert (tmp_path / "q" / "date=2024-03-01" / "vehicle=veh-001" / "drv-x.mcap").exists()
    [line] = (tmp_path / "q" / "manifest.jsonl").read_text().splitlines()
    manifest = json.loads(line)
    assert manifest["offset"] == report.offset and manifest["salvaged_messages"] == report.salvaged


def _part(root, table, drives_rows):
    d = publish.partition_dir(root, table, "2024-03-01", "veh-001")
    d.mkdir(parents=True, exist_ok=True)
    for i, (drive, n) in enumerate(drives_rows):
        pq.write_table(pa.table({"drive_id": [drive] * n, "v": list(range(n))}), d / f"part-{i}.parquet")
    return d


def test_publish_swaps_partitions_and_keeps_unprocessed_drives(tmp_path):
    root, staging = tmp_path / "out", tmp_path / "stage"
    live = _part(root, "t", [("drv-a", 3), ("drv-b", 4)])
    _part(staging, "t", [("drv-a", 5)])
    published = publish.publish(root, staging, ["t"], {("2024-03-01", "veh-001"): {"drv-a"}})
    assert published == ["t/date=2024-03-01/vehicle=veh-001"]
    table = pa.concat_tables(pq.read_table(p) for p in publish.parquet_files(live))
    counts = dict(
        zip(*np.unique(table["drive_id"].to_numpy(zero_copy_only=False), return_counts=True), strict=True)
    )
    assert counts == {"drv-a": 5, "drv-b": 4}
    assert not publish.partition_dir(staging, "t", "2024-03-01", "veh-001").exists()


def test_exchange_is_atomic_swap(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("a")
    (b / "x").write_text("b")
    if not publish.exchange(a, b):
        pytest.skip("filesystem without RENAME_EXCHANGE")
    assert (a / "x").read_text() == "b" and (b / "x").read_text() == "a"


def _signals(seconds=25.0, speed=10.0, brake_at=12.0):
    """Straight drive at constant speed along x, with one brake pulse on CAN."""
    t0 = 1_700_000_000_000_000_000
    t_pose = t0 + np.arange(0, int(seconds * 100)) * 10_000_000
    t_can = t_pose + 1_000_000
    brake = np.where(np.abs((t_can - t0) / 1e9 - brake_at) < 0.5, 60.0, 5.0)
    t_gnss = t0 + np.arange(0, int(seconds * 10)) * 100_000_000
    z = np.zeros

    def part(src, t, a, b=None):
        return (src, t, a, z(t.shape) if b is None else b, z(t.shape))

    parts = [
        part(transforms.SRC_POSE, t_pose, speed * (t_pose - t0) / 1e9),
        part(transforms.SRC_CAN, t_can, np.full(t_can.shape, speed), brake),
        part(
            transforms.SRC_GNSS,
            t_gnss,
            (np.arange(t_gnss.shape[0]) % 4 != 0).astype(float),
            np.full(t_gnss.shape, 0.8),
        ),
        part(transforms.SRC_LIDAR, t_gnss, np.full(t_gnss.shape, 1000.0)),
        part(transforms.SRC_CAMERA, t_gnss[::2], np.ones(t_gnss[::2].shape)),
    ]
    return pa.table(
        {
            "src": np.concatenate([np.full(p[1].shape, p[0]) for p in parts]),
            "t_ns": np.concatenate([p[1] for p in parts]),
            "a": np.concatenate([p[2] for p in parts]),
            "b": np.concatenate([p[3] for p in parts]),
            "c": np.concatenate([p[4] for p in parts]),
        }
    )


def test_scene_stats_contract_and_values():
    cfg = transforms.TransformConfig()
    table = transforms.scene_stats(_signals(), "veh-001", "drv-1", 123, cfg)
    assert table.schema == transforms.SCENE_STATS_SCHEMA
    rows = table.to_pylist()
    assert [r["scene_id"] for r in rows] == ["veh-001_drv-1_0000", "veh-001_drv-1_0001", "veh-001_drv-1_0002"]
    assert [r["hard_brake"] for r in rows] == [0, 1, 0]
    assert rows[1]["brake_pressure_max"] == 60.0
    for r in rows[:2]:
        assert r["speed_mean_mps"] == pytest.approx(10.0, abs=1e-6)
        assert r["accel_p95_mps2"] == pytest.approx(0.0, abs=1e-6)
        assert r["gnss_fix_ratio"] == pytest.approx(0.75)
        assert r["gnss_h_accuracy_m"] == pytest.approx(0.8)
        assert r["lidar_points_mean"] == 1000.0
        assert r["camera_frames"] == 50
        assert (r["scene_end"] - r["event_timestamp"]).total_seconds() == 10.0


def test_ego_motion_grid():
    table = transforms.ego_motion(_signals(seconds=5.0), "veh-001", "drv-1", transforms.TransformConfig())
    assert table.schema == transforms.EGO_MOTION_SCHEMA
    assert table.num_rows == 50
    assert np.diff(table["t_ns"].to_numpy()).tolist() == [100_000_000] * 49
    np.testing.assert_allclose(table["speed_mps"].to_numpy(), 10.0)
    np.testing.assert_allclose(table["can_speed_mps"].to_numpy(), 10.0)
