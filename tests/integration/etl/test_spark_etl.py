from __future__ import annotations

import json
import os
import shutil
from datetime import date
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from nuro_ml.etl import mcap_io, schemas
from nuro_ml.etl.generator import generate_interval
from nuro_ml.etl.job import TABLES, ETLJobConfig, run_etl
from nuro_ml.etl.reader import McapTableReader, infer_schema, plan
from nuro_ml.etl.transforms import SCENE_STATS_SCHEMA
from nuro_ml.etl.validation import inspect_file
from nuro_ml.exceptions import TooManyBadFilesError
from nuro_ml.operators.spark import MCAPToParquetOperator

from tests.unit.etl import bad_files

pytestmark = pytest.mark.integration

DAY = date(2024, 3, 1)
SECONDS = 12
SMALL = {"lidar_points": 128, "image_bytes": 1024, "chunk_size": 32 << 10}
EXPECTED = {topic: int(SECONDS * spec.rate_hz) for topic, spec in schemas.TOPICS.items()}


def _context(task_id: str = "etl") -> dict[str, object]:
    return {
        "ti": SimpleNamespace(dag_id="etl_it", run_id="manual__2024-03-01", task_id=task_id, map_index=-1)
    }


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    # One chunk stream per channel: test_mcap_data_source checks that pushdown skips whole chunks.
    generate_interval(
        root,
        [DAY],
        ["veh-001", "veh-002"],
        drive_seconds=SECONDS,
        seed=11,
        encoding="mixed",
        layout="per-channel",
        **SMALL,
    )
    return root


def test_mcap_data_source(spark_session, raw, tmp_path):
    spark = spark_session
    envelope = spark.read.format("mcap").option("columns", "topic,log_time_ns").load(str(raw))
    counts = {r["topic"]: r["count"] for r in envelope.groupBy("topic").count().collect()}
    assert counts == {topic: 2 * n for topic, n in EXPECTED.items()}

    gnss = spark.read.format("mcap").load(str(raw)).where(f"topic = '{schemas.TOPIC_GNSS}'")
    assert gnss.count() == 2 * EXPECTED[schemas.TOPIC_GNSS]

    # A chunk of one topic is damaged: a scan filtered to another topic never decompresses it.
    damaged = tmp_path / "damaged.mcap"
    chunk_offset = bad_files.corrupt_chunk(sorted(raw.rglob("*.mcap"))[0], damaged)
    with mcap_io.mapped(damaged) as buf:
        summary = mcap_io.read_summary(buf)
        [channel_id] = next(c for c in summary.chunks if c.offset == chunk_offset).channel_ids
        bad_topic = summary.channels[channel_id].topic
    other = next(t for t in schemas.TOPICS if t != bad_topic)
    strict = spark.read.format("mcap").option("onDamage", "fail").load(str(damaged))
    assert strict.where(f"topic = '{other}'").count() == EXPECTED[other]
    with pytest.raises(Exception, match="chunk"):
        strict.where(f"topic = '{bad_topic}'").count()

    pose = (
        spark.read.format("mcap")
        .option("topics", schemas.TOPIC_POSE)
        .option("columns", "file,log_time_ns,pose_position_x,pose_orientation_w")
        .load(str(raw))
    )
    assert pose.columns == ["file", "log_time_ns", "pose_position_x", "pose_orientation_w"]
    rows = pose.orderBy("file", "log_time_ns").collect()
    paths = sorted(str(p) for p in raw.rglob("*.mcap"))
    schema = infer_schema(
        paths, {schemas.TOPIC_POSE}, ["file", "log_time_ns", "pose_position_x", "pose_orientation_w"]
    )
    reader = McapTableReader({schemas.TOPIC_POSE}, schema)
    expected = pa.Table.from_batches(
        [b for part in plan(paths, {schemas.TOPIC_POSE}) for b in reader.read(part)]
    )
    assert [tuple(r) for r in rows] == [tuple(r.values()) for r in expected.to_pylist()]

    imu_ros2 = spark.read.format("mcap").option("topics", schemas.TOPIC_IMU).load(paths[1])
    assert imu_ros2.count() == EXPECTED[schemas.TOPIC_IMU]
    assert "header_frame_id" in imu_ros2.columns


def _table_rows(root, vehicle: str | None = None) -> dict[str, int]:
    """Rows per table, of every partition or of one vehicle's."""
    out = {}
    for table in TABLES:
        if (root / table).is_dir():
            dataset = ds.dataset(root / table, format="parquet", partitioning="hive")
            where = None if vehicle is None else ds.field("vehicle") == vehicle
            if n := dataset.count_rows(filter=where):
                out[table] = n
    return out


def test_operator_round_trip_quarantine_and_rerun(spark_session, raw, tmp_path):
    src = tmp_path / "raw"
    for path in raw.rglob("*.mcap"):
        dest = src / path.relative_to(raw)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(path.read_bytes())
    generate_interval(src, [DAY], ["veh-003"], drive_seconds=SECONDS, seed=11, write_summary=False, **SMALL)
    good = src / "date=2024-03-01" / "vehicle=veh-001" / "drv-20240301-00.mcap"
    for vehicle, damage in (("veh-004", bad_files.truncate), ("veh-005", bad_files.corrupt_chunk)):
        dest = src / "date=2024-03-01" / f"vehicle={vehicle}" / "drv-20240301-00.mcap"
        dest.parent.mkdir(parents=True)
        damage(good, dest)
    # The truncated copy has no index left: its messages before the damage are valid and kept.
    truncated = src / "date=2024-03-01" / "vehicle=veh-004" / "drv-20240301-00.mcap"
    salvaged = inspect_file(str(truncated)).salvaged
    assert salvaged
    out, quarantine = tmp_path / "etl", tmp_path / "quarantine"
    kwargs = {
        "start": "2024-03-01",
        "end": "2024-03-02",
        "input_path": str(src),
        "output_path": str(out),
        "quarantine_path": str(quarantine),
    }

    strict = MCAPToParquetOperator(task_id="etl", max_bad_file_share=0.2, **kwargs)
    with pytest.raises(TooManyBadFilesError) as err:
        strict.execute(_context())
    assert "vehicle=veh-004" in str(err.value) and "vehicle=veh-005" in str(err.value)
    assert len(list(src.rglob("*.mcap"))) == 5 and not _table_rows(out)

    op = MCAPToParquetOperator(task_id="etl", max_bad_file_share=0.5, **kwargs)
    result = op.execute(_context())
    assert result["files"] == 4
    assert result["messages"] == {topic: 3 * n + salvaged.get(topic, 0) for topic, n in EXPECTED.items()}
    quarantined = {q["file"].split("/")[-2]: q for q in result["quarantined"]}
    assert sorted(quarantined) == ["vehicle=veh-004", "vehicle=veh-005"]
    assert quarantined["vehicle=veh-004"]["salvaged_messages"] == salvaged
    assert quarantined["vehicle=veh-005"]["salvaged_messages"] == {}
    assert all(q["reason"] and q["offset"] is not None for q in result["quarantined"])
    assert result["partitions"] == [f"date=2024-03-01/vehicle=veh-00{i}" for i in (1, 2, 3, 4)]
    manifest = [json.loads(line) for line in (quarantine / "manifest.jsonl").read_text().splitlines()]
    assert {m["file"] for m in manifest} == {q["file"] for q in result["quarantined"]}
    assert len(list(src.rglob("*.mcap"))) == 3

    rows = _table_rows(out)
    assert rows == result["rows"]
    for table, topic in (
        ("ego_pose", schemas.TOPIC_POSE),
        ("imu", schemas.TOPIC_IMU),
        ("lidar_points", schemas.TOPIC_LIDAR),
        ("lidar_payload", schemas.TOPIC_LIDAR),
    ):
        assert rows[table] == 3 * EXPECTED[topic] + salvaged.get(topic, 0)
    truncated_rows = _table_rows(out, vehicle="veh-004")
    assert truncated_rows["ego_pose"] == salvaged[schemas.TOPIC_POSE]
    assert rows.get("scene_stats", 0) - truncated_rows.get("scene_stats", 0) == 3  # one per 12 s drive

    scene_file = next((out / "scene_stats" / "date=2024-03-01" / "vehicle=veh-002").glob("part-*.parquet"))
    assert pq.read_schema(scene_file).remove_metadata() == SCENE_STATS_SCHEMA

    published = _parquet_stamps(out)
    # The truncated log is in quarantine now: its partition keeps its rows and is not touched.
    intact = result["partitions"][:3]
    intact_rows = {t: n - truncated_rows.get(t, 0) for t, n in rows.items() if n - truncated_rows.get(t, 0)}
    rerun = MCAPToParquetOperator(task_id="etl", max_bad_file_share=0.5, **kwargs).execute(_context())
    assert rerun["quarantined"] == [] and rerun["rows"] == intact_rows
    assert rerun["messages"] == {topic: 3 * n for topic, n in EXPECTED.items()} and rerun["files"] == 3
    assert rerun["up_to_date"] == rerun["partitions"] == intact
    assert _parquet_stamps(out) == published  # nothing rewritten, so feature fingerprints hold

    def no_spark() -> None:
        raise AssertionError("Spark was started although every partition is up to date")

    cfg = ETLJobConfig(**kwargs)
    assert run_etl(no_spark, cfg)["up_to_date"] == intact  # type: ignore[arg-type]

    # A changed log makes its partition, and only it, stale.
    changed = src / "date=2024-03-01" / "vehicle=veh-002" / "drv-20240301-00.mcap"
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 1_000_000_000))
    partial = MCAPToParquetOperator(task_id="etl", max_bad_file_share=0.5, **kwargs).execute(_context())
    assert partial["up_to_date"] == ["date=2024-03-01/vehicle=veh-001", "date=2024-03-01/vehicle=veh-003"]
    assert partial["partitions"] == intact and partial["rows"] == intact_rows
    stamps = _parquet_stamps(out)
    assert {p for p in stamps if stamps[p] != published.get(p)} == {
        p for p in stamps if "vehicle=veh-002" in p
    }

    # Deleted output is noticed, and reprocess rebuilds everything.
    shutil.rmtree(out / "imu" / "date=2024-03-01" / "vehicle=veh-003")
    healed = MCAPToParquetOperator(task_id="etl", max_bad_file_share=0.5, **kwargs).execute(_context())
    assert "date=2024-03-01/vehicle=veh-003" not in healed["up_to_date"]
    forced = MCAPToParquetOperator(task_id="etl", reprocess=True, max_bad_file_share=0.5, **kwargs)
    assert forced.execute(_context())["up_to_date"] == []
    assert _table_rows(out) == rows


def _parquet_stamps(root) -> dict[str, int]:
    return {
        str(p.relative_to(root)): p.stat().st_mtime_ns
        for p in root.rglob("*.parquet")
        if not any(part.startswith("_") for part in p.relative_to(root).parts)
    }
