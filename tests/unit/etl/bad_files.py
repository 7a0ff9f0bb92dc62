"""Builders of damaged drive logs for the validation and ETL tests."""

from __future__ import annotations

import shutil
from pathlib import Path

from foxglove_schemas_protobuf.Log_pb2 import Log
from foxglove_schemas_protobuf.PoseInFrame_pb2 import PoseInFrame
from nuro_ml.etl import mcap_io, schemas
from nuro_ml.etl.mcap_writer import ChunkedMcapWriter


def truncate(src: Path, dest: Path, share: float = 0.6) -> int:
    """Copy ``src`` cut to ``share`` of its size; returns the new size."""
    shutil.copy(src, dest)
    size = int(dest.stat().st_size * share)
    with open(dest, "r+b") as fh:
        fh.truncate(size)
    return size


def corrupt_chunk(src: Path, dest: Path) -> int:
    """Copy ``src`` with garbage in the middle of its third chunk; returns that chunk's offset."""
    shutil.copy(src, dest)
    with mcap_io.mapped(dest) as buf:
        summary = mcap_io.read_summary(buf)
        assert summary is not None
        chunk = mcap_io.chunk_at(buf, summary.chunks[2].offset)
    with open(dest, "r+b") as fh:
        fh.seek((chunk.data_start + chunk.data_end) // 2)
        fh.write(b"\x00garbage\xff" * 8)
    return chunk.offset


def _writer_file(dest: Path, write: object) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as fh:
        w = ChunkedMcapWriter(fh, chunk_size=4096)
        write(w)  # type: ignore[operator]
        w.finish()


def unknown_schema(dest: Path) -> None:
    """A file whose /imu channel carries a schema the ETL does not know."""

    def write(w: ChunkedMcapWriter) -> None:
        sid = w.register_schema("foxglove.Log", "protobuf", schemas.file_descriptor_set(Log))
        cid = w.register_channel(schemas.TOPIC_IMU, "protobuf", sid)
        for i in range(10):
            w.add_message(
                cid, 1_700_000_000_000_000_000 + i * 5_000_000, Log(message="x").SerializeToString(), 0, i
            )

    _writer_file(dest, write)


def non_monotonic(dest: Path) -> None:
    """A file whose /ego/pose log times jump backwards."""

    def write(w: ChunkedMcapWriter) -> None:
        sid = w.register_schema("foxglove.PoseInFrame", "protobuf", schemas.file_descriptor_set(PoseInFrame))
        cid = w.register_channel(schemas.TOPIC_POSE, "protobuf", sid)
        t0 = 1_700_000_000_000_000_000
        for i, k in enumerate([0, 1, 2, 3, 1, 5, 6]):
            w.add_message(cid, t0 + k * 10_000_000, PoseInFrame(frame_id="map").SerializeToString(), 0, i)

    _writer_file(dest, write)
