"""A chunked MCAP writer: interleaved chunks as recorders write them, or one open chunk per channel.

Every recorder in the field (rosbag2, the upstream ``mcap`` writers, Foxglove) writes one
time-ordered chunk stream for all channels: ``layout="interleaved"``, the default. With
``layout="per-channel"`` each channel keeps its own open chunk, which makes the summary's chunk
index a topic index (a reader skips whole chunks of channels it does not want); chunks of
different channels then overlap in time, which the MCAP format allows.
"""

from __future__ import annotations

import struct
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import BinaryIO

from mcap.data_stream import RecordBuilder
from mcap.opcode import Opcode
from mcap.records import (
    Channel,
    Chunk,
    ChunkIndex,
    DataEnd,
    Footer,
    Header,
    MessageIndex,
    Metadata,
    MetadataIndex,
    Schema,
    Statistics,
    SummaryOffset,
)

MAGIC = b"\x89MCAP0\r\n"
COMPRESSIONS = ("zstd", "lz4", "none")
_MESSAGE_HEAD = struct.Struct("<BQHIQQ")


def compressor(name: str, level: int | None = None) -> tuple[str, object]:
    """Return the MCAP compression name and a callable compressing bytes."""
    if name == "zstd":
        import zstandard

        zc = zstandard.ZstdCompressor(level=1 if level is None else level)
        return "zstd", zc.compress
    if name == "lz4":
        import lz4.frame

        return "lz4", lz4.frame.compress
    if name == "none":
        return "", bytes
    raise ValueError(f"unsupported compression {name!r}; expected one of {COMPRESSIONS}")


@dataclass
class _OpenChunk:
    buffer: bytearray = field(default_factory=bytearray)
    index: dict[int, list[tuple[int, int]]] = field(default_factory=lambda: defaultdict(list))
    start: int = 0
    end: int = 0
    count: int = 0


LAYOUTS = ("interleaved", "per-channel")


class ChunkedMcapWriter:
    """Write an MCAP file with schemas and channels up front and one open chunk per channel.

    :param stream: binary output stream (positioned at 0).
    :param chunk_size: uncompressed bytes after which a channel's chunk is flushed.
    :param compression: ``zstd``, ``lz4`` or ``none``.
    :param profile: MCAP header profile (``ros2`` when every channel is CDR).
    :param write_summary: write the summary section (schemas, channels, statistics, chunk index);
        ``False`` produces a valid file that readers must scan sequentially.
    :param layout: ``interleaved`` (one chunk stream for all channels) or ``per-channel``.
    """

    def __init__(
        self,
        stream: BinaryIO,
        *,
        chunk_size: int = 1 << 20,
        compression: str = "zstd",
        profile: str = "",
        library: str = "nuro-ml",
        write_summary: bool = True,
        layout: str = "interleaved",
    ) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"unknown chunk layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
        self._per_channel = layout == "per-channel"
        self._out = stream
        self._chunk_size = chunk_size
        self._compression, self._compress = compressor(compression)
        self._write_summary = write_summary
        self._schemas: dict[int, Schema] = {}
        self._channels: dict[int, Channel] = {}
        self._open: dict[int, _OpenChunk] = {}
        self._chunk_indexes: list[ChunkIndex] = []
        self._metadata_indexes: list[MetadataIndex] = []
        self._counts: dict[int, int] = defaultdict(int)
        self._message_count = 0
        self._start_time: int | None = None
        self._end_time = 0
        self._chunk_count = 0
        self._out.write(MAGIC)
        self._emit(lambda rb: Header(profile=profile, library=library).write(rb))

    def _emit(self, write: object) -> int:
        builder = RecordBuilder()
        write(builder)  # type: ignore[operator]
        data = builder.end()
        offset = self._out.tell()
        self._out.write(data)
        return offset

    def register_schema(self, name: str, encoding: str, data: bytes) -> int:
        schema_id = len(self._schemas) + 1
        schema = Schema(id=schema_id, name=name, encoding=encoding, data=data)
        self._schemas[schema_id] = schema
        self._emit(schema.write)
        return schema_id

    def register_channel(self, topic: str, message_encoding: str, schema_id: int) -> int:
        channel_id = len(self._channels) + 1
        channel = Channel(
            id=channel_id, topic=topic, message_encoding=message_encoding, schema_id=schema_id, metadata={}
        )
        self._channels[channel_id] = channel
        self._emit(channel.write)
        return channel_id

    def add_metadata(self, name: str, data: dict[str, str]) -> None:
        builder = RecordBuilder()
        Metadata(name=name, metadata=data).write(builder)
        record = builder.end()
        offset = self._out.tell()
        self._out.write(record)
        self._metadata_indexes.append(MetadataIndex(offset=offset, length=len(record), name=name))

    def add_message(
        self, channel_id: int, log_time: int, data: bytes, publish_time: int, sequence: int
    ) -> None:
        key = channel_id if self._per_channel else 0
        chunk = self._open.get(key)
        if chunk is None:
            chunk = self._open[key] = _OpenChunk(start=log_time, end=log_time)
        chunk.index[channel_id].append((log_time, len(chunk.buffer)))
        chunk.buffer += _MESSAGE_HEAD.pack(
            Opcode.MESSAGE, 22 + len(data), channel_id, sequence, log_time, publish_time
        )
        chunk.buffer += data
        chunk.start = min(chunk.start, log_time)
        chunk.end = max(chunk.end, log_time)
        chunk.count += 1
        self._counts[channel_id] += 1
        self._message_count += 1
        self._start_time = log_time if self._start_time is None else min(self._start_time, log_time)
        self._end_time = max(self._end_time, log_time)
        if len(chunk.buffer) >= self._chunk_size:
            self._flush(key)

    def _flush(self, key: int) -> None:
        chunk = self._open.pop(key, None)
        if chunk is None or not chunk.count:
            return
        raw = bytes(chunk.buffer)
        compressed = self._compress(raw)  # type: ignore[operator]
        record = Chunk(
            compression=self._compression,
            data=compressed,
            message_start_time=chunk.start,
            message_end_time=chunk.end,
            uncompressed_crc=zlib.crc32(raw),
            uncompressed_size=len(raw),
        )
        chunk_offset = self._emit(record.write)
        index_start = self._out.tell()
        index_offsets: dict[int, int] = {}
        for cid, entries in chunk.index.items():
            index_offsets[cid] = self._emit(MessageIndex(channel_id=cid, records=entries).write)
        index_end = self._out.tell()
        self._chunk_count += 1
        self._chunk_indexes.append(
            ChunkIndex(
                message_start_time=chunk.start,
                message_end_time=chunk.end,
                chunk_start_offset=chunk_offset,
                chunk_length=index_start - chunk_offset,
                message_index_offsets=index_offsets,
                message_index_length=index_end - index_start,
                compression=self._compression,
                compressed_size=len(compressed),
                uncompressed_size=len(raw),
            )
        )

    def finish(self) -> None:
        """Flush open chunks and write the data end, summary, footer and closing magic."""
        for key in sorted(self._open):
            self._flush(key)
        self._emit(DataEnd(data_section_crc=0).write)
        if not self._write_summary:
            self._emit(Footer(summary_start=0, summary_offset_start=0, summary_crc=0).write)
            self._out.write(MAGIC)
            return
        summary_start = self._out.tell()
        builder = RecordBuilder()
        offsets: list[SummaryOffset] = []

        def group(opcode: int, records: list[object]) -> None:
            if not records:
                return
            start = builder.count
            for rec in records:
                rec.write(builder)  # type: ignore[attr-defined]
            offsets.append(
                SummaryOffset(
                    group_opcode=opcode, group_start=summary_start + start, group_length=builder.count - start
                )
            )

        group(Opcode.SCHEMA, list(self._schemas.values()))
        group(Opcode.CHANNEL, list(self._channels.values()))
        stats = Statistics(
            message_count=self._message_count,
            schema_count=len(self._schemas),
            channel_count=len(self._channels),
            attachment_count=0,
            metadata_count=len(self._metadata_indexes),
            chunk_count=self._chunk_count,
            message_start_time=self._start_time or 0,
            message_end_time=self._end_time,
            channel_message_counts=dict(self._counts),
        )
        group(Opcode.STATISTICS, [stats])
        group(Opcode.CHUNK_INDEX, list(self._chunk_indexes))
        group(Opcode.METADATA_INDEX, list(self._metadata_indexes))
        summary_offset_start = summary_start + builder.count
        for off in offsets:
            off.write(builder)
        summary = builder.end()
        crc = zlib.crc32(summary)
        crc = zlib.crc32(struct.pack("<BQQQ", Opcode.FOOTER, 20, summary_start, summary_offset_start), crc)
        self._out.write(summary)
        self._emit(
            Footer(
                summary_start=summary_start, summary_offset_start=summary_offset_start, summary_crc=crc
            ).write
        )
        self._out.write(MAGIC)
