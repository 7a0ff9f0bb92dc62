from __future__ import annotations

import shutil
from datetime import date

import numpy as np
import pyarrow as pa
import pytest
from mcap.reader import make_reader
from mcap_protobuf.decoder import DecoderFactory as ProtobufDecoderFactory
from mcap_ros2.decoder import DecoderFactory as Ros2DecoderFactory
from nuro_ml.etl import mcap_io, schemas
from nuro_ml.etl.generator import generate_interval
from nuro_ml.etl.reader import McapTableReader, infer_schema, plan

DAY = date(2024, 3, 1)
SMALL = {"lidar_points": 128, "image_bytes": 1024, "chunk_size": 32 << 10}


@pytest.fixture(scope="module")
def drives(tmp_path_factory):
    # One chunk stream per channel: the layout where topic pushdown skips whole chunks.
    root = tmp_path_factory.mktemp("raw")
    return generate_interval(
        root,
        [DAY],
        ["veh-001", "veh-002"],
        drive_seconds=6,
        seed=3,
        encoding="mixed",
        layout="per-channel",
        **SMALL,
    )


def _read_all(paths, topic, columns=None, part_bytes=1 << 30):
    schema = infer_schema([str(p) for p in paths], {topic}, columns)
    reader = McapTableReader({topic}, schema)
    batches = [
        b for part in plan([str(p) for p in paths], {topic}, part_bytes=part_bytes) for b in reader.read(part)
    ]
    return pa.Table.from_batches(batches, schema=schema), reader.stats


def _official(path, topic):
    with open(path, "rb") as fh:
        reader = make_reader(fh, decoder_factories=[ProtobufDecoderFactory(), Ros2DecoderFactory()])
        return [
            (m.log_time, d)
            for _, _, m, d in reader.iter_decoded_messages(topics=[topic], log_time_order=False)
        ]


@pytest.mark.parametrize("vehicle_index", [0, 1], ids=["protobuf", "ros2"])
def test_decoded_values_equal_upstream_decoders(drives, vehicle_index):
    path = drives[vehicle_index]
    imu, _ = _read_all([path], schemas.TOPIC_IMU)
    ref = _official(path, schemas.TOPIC_IMU)
    assert imu.num_rows == len(ref) == 1200
    np.testing.assert_array_equal(imu["log_time_ns"].to_numpy(), [t for t, _ in ref])
    for axis in "xyz":
        np.testing.assert_array_equal(
            imu[f"linear_acceleration_{axis}"].to_numpy(),
            [getattr(d.linear_acceleration, axis) for _, d in ref],
        )
    can, _ = _read_all([path], schemas.TOPIC_CAN)
    ref_can = _official(path, schemas.TOPIC_CAN)
    np.testing.assert_array_equal(
        can["brake_pressure_bar"].to_numpy(), [d.brake_pressure_bar for _, d in ref_can]
    )
    np.testing.assert_array_equal(can["gear"].to_numpy(), [d.gear for _, d in ref_can])

    pose, _ = _read_all([path], schemas.TOPIC_POSE)
    ref_pose = _official(path, schemas.TOPIC_POSE)
    np.testing.assert_array_equal(
        pose["pose_position_x"].to_numpy(), [d.pose.position.x for _, d in ref_pose]
    )
    stamps = [d.timestamp.seconds * 1_000_000 + d.timestamp.nanos // 1000 for _, d in ref_pose]
    assert pose["timestamp"].cast(pa.int64()).to_pylist() == stamps

    gnss, _ = _read_all([path], schemas.TOPIC_GNSS)
    ref_gnss = _official(path, schemas.TOPIC_GNSS)
    assert gnss["position_covariance"].to_pylist() == [list(d.position_covariance) for _, d in ref_gnss]
    assert gnss["position_covariance_type"].to_pylist() == [d.position_covariance_type for _, d in ref_gnss]

    lidar, _ = _read_all([path], schemas.TOPIC_LIDAR)
    ref_lidar = _official(path, schemas.TOPIC_LIDAR)
    assert lidar["data"].to_pylist() == [d.data for _, d in ref_lidar]
    assert [f["name"] for f in lidar["fields"][0].as_py()] == ["x", "y", "z", "intensity"]


def test_topic_pushdown_reads_fewer_bytes_and_prunes_columns(drives):
    path = str(drives[0])
    everything = McapTableReader(None, infer_schema([path], None))
    for part in plan([path], None):
        list(everything.read(part))
    pose, stats = _read_all([path], schemas.TOPIC_POSE, columns=["log_time_ns", "pose_position_x"])
    assert pose.column_names == ["log_time_ns", "pose_position_x"]
    assert stats.messages == {schemas.TOPIC_POSE: 600}
    assert sum(everything.stats.messages.values()) == 600 + 60 + 1200 + 600 + 60 + 60
    assert stats.bytes_read * 5 < everything.stats.bytes_read
    assert stats.bytes_decompressed * 5 < everything.stats.bytes_decompressed


def test_large_file_splits_into_chunk_ranges(drives):
    path = str(drives[0])
    parts = plan([path], {schemas.TOPIC_LIDAR}, part_bytes=16 << 10)
    assert len(parts) > 2 and all(p.chunks for p in parts)
    offsets = [o for p in parts for o in p.chunks or ()]
    assert len(offsets) == len(set(offsets))
    table, _ = _read_all([path], schemas.TOPIC_LIDAR, part_bytes=16 << 10)
    assert table.num_rows == 60
    assert table["log_time_ns"].to_pylist() == sorted(table["log_time_ns"].to_pylist())


def test_unindexed_and_truncated_files_read_by_scan(tmp_path, drives):
    [unindexed] = generate_interval(
        tmp_path, [DAY], ["veh-001"], drive_seconds=6, seed=3, write_summary=False, **SMALL
    )
    assert plan([str(unindexed)], None)[0].chunks is None
    table, stats = _read_all([unindexed], schemas.TOPIC_IMU)
    assert table.num_rows == 1200 and not stats.damage
    reference, _ = _read_all([drives[0]], schemas.TOPIC_IMU)
    assert table["angular_velocity_z"].to_pylist() == reference["angular_velocity_z"].to_pylist()

    truncated = tmp_path / "truncated.mcap"
    shutil.copy(drives[0], truncated)
    size = truncated.stat().st_size
    with open(truncated, "r+b") as fh:
        fh.truncate(int(size * 0.6))
    table, stats = _read_all([truncated], schemas.TOPIC_IMU)
    assert 0 < table.num_rows < 1200
    [(file, reason, offset)] = stats.damage
    assert file == str(truncated) and "truncated" in reason and 0 < offset < size * 0.6


def test_framing_matches_message_index(drives):
    with mcap_io.mapped(drives[0]) as buf:
        summary = mcap_io.read_summary(buf)
        assert summary is not None and summary.message_count == 2580
        chunk = mcap_io.chunk_at(buf, summary.chunks[0].offset)
        batch = mcap_io.frame_records(mcap_io.load_chunk(buf, chunk, verify_crc=True))
        assert len(batch) > 0
        assert (batch.log_time >= chunk.start_time).all() and (batch.log_time <= chunk.end_time).all()


def test_data_source_plans_only_chunks_of_pushed_topics(drives):
    from nuro_ml.etl.datasource import McapDataSource
    from pyspark.sql.datasource import EqualTo, GreaterThan

    source = McapDataSource(
        {"path": str(drives[0].parent.parent), "partitionBytes": str(16 << 10), "filterPushdown": "true"}
    )
    schema = source.schema()
    assert schema.fieldNames()[-1] == "data"
    everything = source.reader(schema).partitions()
    reader = source.reader(schema)
    time_filter = GreaterThan(("log_time_ns",), 0)
    remaining = list(reader.pushFilters([EqualTo(("topic",), schemas.TOPIC_GNSS), time_filter]))
    assert remaining == [time_filter]  # time ranges prune chunks but are still applied by Spark
    pruned = reader.partitions()
    assert 0 < len(pruned) < len(everything) / 5
    assert {p.part.path for p in pruned} == {str(d) for d in drives}


def test_data_source_offers_pushdown_only_in_the_pushdown_step(drives):
    from nuro_ml.etl.datasource import McapDataSource, McapPushdownReader
    from pyspark.sql.datasource import DataSourceReader

    source = McapDataSource({"path": str(drives[0])})
    schema = source.schema()
    plain = source.reader(schema)
    # Spark refuses a reader overriding pushFilters while spark.sql.python.filterPushdown.enabled
    # is off (its default); planned outside the pushdown step, the reader does not override it.
    assert type(plain).pushFilters is DataSourceReader.pushFilters

    def data_source_pushdown_filters() -> object:  # how the PySpark worker module calls it
        return source.reader(schema)

    data_source_pushdown_filters.__code__ = data_source_pushdown_filters.__code__.replace(
        co_filename="/x/pyspark/sql/worker/data_source_pushdown_filters.py"
    )
    assert isinstance(data_source_pushdown_filters(), McapPushdownReader)
    never = McapDataSource({"path": str(drives[0]), "filterPushdown": "false"})
    assert type(never.reader(schema)).pushFilters is DataSourceReader.pushFilters
