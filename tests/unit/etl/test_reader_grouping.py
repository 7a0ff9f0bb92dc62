"""Chunks of few messages are decoded together without changing what a read returns."""

from __future__ import annotations

import shutil
from datetime import date

import numpy as np
import pyarrow as pa
import pytest
from nuro_ml.etl import mcap_io, reader, schemas
from nuro_ml.etl.generator import generate_interval
from nuro_ml.etl.reader import McapTableReader, infer_schema, plan


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    [path] = generate_interval(
        root,
        [date(2024, 6, 1)],
        ["veh-002"],
        drive_seconds=4,
        seed=5,
        lidar_points=512,
        chunk_size=24 << 10,
        layout="per-channel",  # chunks of one topic, so a test can damage one topic's chunk
    )
    return path


def _read(path, topic, on_damage="stop"):
    schema = infer_schema([str(path)], {topic})
    r = McapTableReader({topic}, schema, on_damage=on_damage)
    batches = [b for part in plan([str(path)], {topic}) for b in r.read(part)]
    return batches, r.stats


@pytest.mark.parametrize("topic", [schemas.TOPIC_LIDAR, schemas.TOPIC_CAMERA, schemas.TOPIC_IMU])
def test_grouped_read_equals_chunk_by_chunk_read(drive, topic, monkeypatch):
    grouped, stats = _read(drive, topic)
    assert len(grouped) < stats.chunks_read  # chunks were decoded together
    monkeypatch.setattr(reader, "_GROUP_BYTES", 1)  # each chunk alone
    single, _ = _read(drive, topic)
    assert len(single) == stats.chunks_read
    assert pa.Table.from_batches(grouped).equals(pa.Table.from_batches(single))


def test_damaged_chunk_keeps_the_messages_before_it(drive, tmp_path):
    topic = schemas.TOPIC_LIDAR
    with mcap_io.mapped(drive) as buf:
        summary = mcap_io.read_summary(buf)
        chunks = [c for c in summary.chunks if summary.channels[next(iter(c.channel_ids))].topic == topic]
        damaged = chunks[len(chunks) // 2]
        before = 0
        for c in chunks[: len(chunks) // 2]:
            before += len(mcap_io.frame_records(mcap_io.load_chunk(buf, mcap_io.chunk_at(buf, c.offset))))
    bad = tmp_path / "bad.mcap"
    shutil.copy(drive, bad)
    raw = mcap_io.chunk_at(memoryview(bad.read_bytes()), damaged.offset)
    with open(bad, "r+b") as fh:
        fh.seek((raw.data_start + raw.data_end) // 2)
        fh.write(b"\xde\xad\xbe\xef")
    batches, stats = _read(bad, topic)
    assert sum(b.num_rows for b in batches) == before > 0
    [(path, reason, offset)] = stats.damage
    assert path == str(bad) and offset == damaged.offset and ("CRC" in reason or "decompress" in reason)
    complete, _ = _read(drive, topic)
    head = pa.Table.from_batches(complete).slice(0, before).drop_columns(["file"])
    assert pa.Table.from_batches(batches).drop_columns(["file"]).equals(head)
    with pytest.raises(mcap_io.McapFormatError, match=r"bad\.mcap"):
        _read(bad, topic, on_damage="fail")


@pytest.mark.parametrize("compression", ["lz4", "none"])
def test_chunk_compressions_read_alike(drive, tmp_path, compression):
    [other] = generate_interval(
        tmp_path,
        [date(2024, 6, 1)],
        ["veh-002"],
        drive_seconds=4,
        seed=5,
        lidar_points=512,
        chunk_size=24 << 10,
        compression=compression,
    )
    for topic in (schemas.TOPIC_LIDAR, schemas.TOPIC_IMU):
        expected = pa.Table.from_batches(_read(drive, topic)[0]).drop_columns(["file"])
        assert pa.Table.from_batches(_read(other, topic)[0]).drop_columns(["file"]).equals(expected)


def test_raw_read_returns_every_payload(drive):
    from mcap.reader import make_reader

    r = McapTableReader(None, infer_schema([str(drive)], None))
    table = pa.Table.from_batches([b for part in plan([str(drive)], None) for b in r.read(part)])
    with open(drive, "rb") as fh:
        expected = {
            (channel.topic, message.sequence): message.data
            for _, channel, message in make_reader(fh).iter_messages(log_time_order=False)
        }
    got = dict(
        zip(
            zip(table["topic"].to_pylist(), table["sequence"].to_pylist(), strict=True),
            table["data"].to_pylist(),
            strict=True,
        )
    )
    assert table.num_rows == len(expected) and got == expected


def _upstream_file(path, **options):
    """An MCAP file written by the upstream writer (IMU and pose on interleaved channels)."""
    from foxglove_schemas_protobuf.PoseInFrame_pb2 import PoseInFrame
    from mcap.writer import Writer

    imu_class = schemas.sensor_message_classes()[schemas.IMU_PROTO]
    with open(path, "wb") as fh:
        writer = Writer(fh, **options)
        writer.start()
        ids = {}
        for topic, cls in ((schemas.TOPIC_IMU, imu_class), (schemas.TOPIC_POSE, PoseInFrame)):
            sid = writer.register_schema(
                cls.DESCRIPTOR.full_name, "protobuf", schemas.file_descriptor_set(cls)
            )
            ids[topic] = writer.register_channel(topic, "protobuf", sid)
        for i in range(300):
            imu = imu_class(frame_id="imu")
            imu.timestamp.seconds, imu.timestamp.nanos = 1_700_000_000 + i // 100, (i % 100) * 10_000_000
            imu.linear_acceleration.x = i * 0.5
            writer.add_message(ids[schemas.TOPIC_IMU], i * 10**7, imu.SerializeToString(), i * 10**7, i)
            if i % 3 == 0:
                pose = PoseInFrame(frame_id="map" * (i % 4))
                pose.pose.position.x = float(i)
                writer.add_message(ids[schemas.TOPIC_POSE], i * 10**7, pose.SerializeToString(), i * 10**7, i)
        writer.finish()
    return path


@pytest.mark.parametrize(
    "options",
    [
        {"chunk_size": 4096},  # schema and channel records inside chunks, channels interleaved
        {"chunk_size": 4096, "index_types": "none"},  # no message indexes to frame chunks by
        {"use_chunking": False},  # messages outside chunks
    ],
    ids=["interleaved", "no-message-index", "unchunked"],
)
def test_files_of_the_upstream_writer(tmp_path, options):
    from mcap.reader import make_reader
    from mcap.writer import IndexType
    from mcap_protobuf.decoder import DecoderFactory

    if options.get("index_types") == "none":
        options = {**options, "index_types": IndexType.NONE}
    path = _upstream_file(tmp_path / "upstream.mcap", **options)
    for topic, column, attr in (
        (schemas.TOPIC_IMU, "linear_acceleration_x", lambda m: m.linear_acceleration.x),
        (schemas.TOPIC_POSE, "pose_position_x", lambda m: m.pose.position.x),
    ):
        table = pa.Table.from_batches(_read(path, topic)[0])
        with open(path, "rb") as fh:
            ref = [
                d
                for _, _, _, d in make_reader(fh, decoder_factories=[DecoderFactory()]).iter_decoded_messages(
                    topics=[topic], log_time_order=False
                )
            ]
        assert table[column].to_pylist() == [attr(m) for m in ref] and len(ref) > 0
        assert table["frame_id"].to_pylist() == [m.frame_id for m in ref]


def test_framing_by_message_index_equals_the_record_walk(tmp_path):
    path = _upstream_file(tmp_path / "upstream.mcap", chunk_size=4096)
    with mcap_io.mapped(path) as buf:
        chunks = [mcap_io.chunk_at(buf, c.offset) for c in mcap_io.read_summary(buf).chunks]
        assert len(chunks) > 3
        for chunk in chunks:
            data = mcap_io.load_chunk(buf, chunk, verify_crc=True)
            walked_schemas: dict[int, mcap_io.SchemaInfo] = {}
            walked_channels: dict[int, mcap_io.ChannelInfo] = {}
            walked = mcap_io.frame_records(data, chunk.offset, walked_schemas, walked_channels)
            hint = mcap_io.message_offsets(buf, chunk)
            assert hint is not None and np.array_equal(hint, walked.starts - 31)
            # The hint, and hints that do not fit: shifted, incomplete, with an offset inside a
            # message, with the first record (in the first chunk a schema record).
            bogus = [np.sort(np.append(hint, hint[0] + 5)), np.unique(np.append(hint, 0))]
            for variant in (hint, hint + 1, hint[1:], *bogus):
                found_schemas: dict[int, mcap_io.SchemaInfo] = {}
                found_channels: dict[int, mcap_io.ChannelInfo] = {}
                framed = mcap_io.frame_records(data, chunk.offset, found_schemas, found_channels, variant)
                for name in ("starts", "ends", "channel_ids", "log_time", "sequence"):
                    assert np.array_equal(getattr(framed, name), getattr(walked, name)), name
                assert (found_schemas, found_channels) == (walked_schemas, walked_channels)
        # The first chunk starts with schema and channel records: the hint is used, and they are
        # walked, not skipped.
        data = mcap_io.load_chunk(buf, chunks[0])
        first_schemas: dict[int, mcap_io.SchemaInfo] = {}
        first_channels: dict[int, mcap_io.ChannelInfo] = {}
        hint = mcap_io.message_offsets(buf, chunks[0])
        assert hint is not None
        positions = mcap_io._walk_hinted(data, 0, first_schemas, first_channels, hint)
        assert positions is not None and positions[0] > 0 and first_schemas and first_channels
