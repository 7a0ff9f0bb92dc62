"""Read MCAP files into Arrow record batches: planning by chunk index, topic pruning, decoding.

This is the engine behind the Spark data source (``spark.read.format("mcap")``) and usable on its
own. A read is planned into :class:`FilePart` s: ranges of chunks of one file that hold a wanted
channel (from the summary's chunk index), or a whole file to scan sequentially when it has no
index. Chunks without a wanted channel are never read from disk nor decompressed.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from nuro_ml.etl import mcap_io
from nuro_ml.etl.arrays import one_array
from nuro_ml.etl.batching import ChannelBatcher
from nuro_ml.etl.mcap_io import ChannelInfo, McapFormatError, MessageBatch, SchemaInfo
from nuro_ml.etl.proto_decode import ProtobufDecoder
from nuro_ml.etl.ros2_decode import Ros2Decoder

ENVELOPE_SCHEMA = pa.schema(
    [
        pa.field("file", pa.string()),
        pa.field("topic", pa.string()),
        pa.field("log_time", pa.timestamp("us", tz="UTC")),
        pa.field("log_time_ns", pa.int64()),
        pa.field("publish_time_ns", pa.int64()),
        pa.field("sequence", pa.int64()),
    ]
)
RAW_SCHEMA = pa.schema(
    [
        *ENVELOPE_SCHEMA,
        pa.field("schema_name", pa.string()),
        pa.field("message_encoding", pa.string()),
        pa.field("data", pa.binary()),
    ]
)
DEFAULT_PART_BYTES = 128 << 20
#: Consecutive chunks decompressed into one buffer (uncompressed bytes) by
#: :class:`McapTableReader` and :func:`decode_file`.
_GROUP_BYTES = 8 << 20
_TIMESTAMP_US = pa.timestamp("us", tz="UTC")


class UnsupportedSchemaError(ValueError):
    """No decoder exists for a channel's schema or message encoding."""


class Decoder(Protocol):
    schema: pa.Schema

    def decode(
        self, buf: Any, starts: np.ndarray, ends: np.ndarray, columns: Sequence[str] | None = None
    ) -> pa.Table: ...


_DECODERS: dict[tuple[str, str, str], Decoder] = {}


def decoder_for(schema: SchemaInfo, message_encoding: str) -> Decoder:
    """A (cached) decoder for a channel, or :class:`UnsupportedSchemaError`."""
    key = (message_encoding, schema.name, hashlib.sha1(schema.data).hexdigest())
    dec = _DECODERS.get(key)
    if dec is not None:
        return dec
    try:
        if message_encoding == "protobuf" and schema.encoding == "protobuf":
            dec = ProtobufDecoder(schema.name, schema.data)
        elif message_encoding == "cdr" and schema.encoding == "ros2msg":
            dec = Ros2Decoder(schema.name, schema.data.decode("utf-8"))
    except Exception as err:
        raise UnsupportedSchemaError(
            f"schema {schema.name!r} ({schema.encoding}) cannot be loaded: {err}"
        ) from err
    if dec is None:
        raise UnsupportedSchemaError(
            f"no decoder for schema {schema.name!r} with schema encoding {schema.encoding!r} "
            f"and message encoding {message_encoding!r}"
        )
    _DECODERS[key] = dec
    return dec


def expand_paths(paths: Iterable[str | Path]) -> list[str]:
    """Files, directories (searched recursively for ``*.mcap``) and globs, sorted and deduplicated."""
    out: set[str] = set()
    for p in paths:
        text = str(p)
        matches = glob.glob(text, recursive=True) if any(c in text for c in "*?[") else [text]
        for m in matches:
            if os.path.isdir(m):
                for root, _, names in os.walk(m):
                    out.update(
                        os.path.join(root, n) for n in names if n.endswith(".mcap") and not n.startswith(".")
                    )
            elif os.path.exists(m):
                out.add(m)
            else:
                raise FileNotFoundError(f"MCAP input {m} does not exist")
    return sorted(out)


@dataclass(frozen=True)
class FilePart:
    """A unit of reading: a file's listed chunks (indexed) or the whole file (``chunks is None``)."""

    path: str
    chunks: tuple[int, ...] | None
    compressed_bytes: int


@dataclass
class ReadStats:
    """What a read touched; used to verify pruning and to report progress."""

    bytes_read: int = 0
    bytes_decompressed: int = 0
    chunks_read: int = 0
    messages: dict[str, int] = field(default_factory=dict)
    damage: list[tuple[str, str, int]] = field(default_factory=list)

    def add(self, other: ReadStats) -> None:
        self.bytes_read += other.bytes_read
        self.bytes_decompressed += other.bytes_decompressed
        self.chunks_read += other.chunks_read
        for k, v in other.messages.items():
            self.messages[k] = self.messages.get(k, 0) + v
        self.damage.extend(other.damage)


def plan(
    paths: Sequence[str],
    topics: set[str] | None,
    *,
    part_bytes: int = DEFAULT_PART_BYTES,
    time_range: tuple[int, int] | None = None,
) -> list[FilePart]:
    """Split the files into parts of about ``part_bytes`` compressed bytes of relevant chunks."""
    parts: list[FilePart] = []
    for path in paths:
        with mcap_io.mapped(path) as buf:
            try:
                summary = mcap_io.read_summary(buf)
            except McapFormatError:
                summary = None
            if summary is None or not summary.chunks or any(c.channel_ids is None for c in summary.chunks):
                parts.append(FilePart(path, None, len(buf)))
                continue
            wanted = {cid for cid, ch in summary.channels.items() if topics is None or ch.topic in topics}
            group: list[int] = []
            size = 0
            for chunk in summary.chunks:
                if not (chunk.channel_ids or frozenset()) & wanted:
                    continue
                if time_range is not None and (
                    chunk.end_time < time_range[0] or chunk.start_time >= time_range[1]
                ):
                    continue
                group.append(chunk.offset)
                size += chunk.length
                if size >= part_bytes:
                    parts.append(FilePart(path, tuple(group), size))
                    group, size = [], 0
            if group:
                parts.append(FilePart(path, tuple(group), size))
    return parts


class McapTableReader:
    """Decode the messages of chosen topics into Arrow record batches of a fixed schema.

    :param topics: topics to read (``None``: all).
    :param schema: output schema: any of the envelope columns, plus either decoded columns
        of the topics' schema or the raw ``schema_name``/``message_encoding``/``data`` columns.
    :param on_damage: ``stop`` to end a file quietly at the first damaged record (recorded in
        :attr:`stats`), ``fail`` to raise :class:`~nuro_ml.etl.mcap_io.McapFormatError`.
    """

    def __init__(
        self, topics: set[str] | None, schema: pa.Schema, *, on_damage: str = "stop", verify_crc: bool = True
    ) -> None:
        self.topics = topics
        self.schema = schema
        self.on_damage = on_damage
        self.verify_crc = verify_crc
        self.stats = ReadStats()
        env = set(ENVELOPE_SCHEMA.names)
        self.raw = any(
            name in ("data", "schema_name", "message_encoding") for name in schema.names
        ) and not any(name not in env and name not in RAW_SCHEMA.names for name in schema.names)
        self.decoded_columns = [name for name in schema.names if name not in env]

    def read(self, part: FilePart) -> Iterator[pa.RecordBatch]:
        with mcap_io.mapped(part.path) as buf:
            yield from self._read(part, buf)

    def _read(self, part: FilePart, buf: Any) -> Iterator[pa.RecordBatch]:
        schemas: dict[int, SchemaInfo] = {}
        channels: dict[int, ChannelInfo] = {}
        if part.chunks is not None:
            summary = mcap_io.read_summary(buf, chunk_index=False)
            assert summary is not None
            schemas.update(summary.schemas)
            channels.update(summary.channels)
            try:
                raw_chunks = [mcap_io.chunk_at(buf, off) for off in part.chunks]
            except McapFormatError as err:
                self._damage(part.path, err)
                return
            loose: list[int] = []
        else:
            result = mcap_io.scan(buf)
            schemas.update(result.schemas)
            channels.update(result.channels)
            raw_chunks = result.chunks
            loose = result.loose_messages
            if result.damage is not None:
                self._damage(part.path, result.damage, defer=True)
        if loose:
            yield from self._emit(
                part.path, mcap_io.envelopes(buf, np.asarray(loose, dtype=np.int64)), schemas, channels
            )
        for item in self._chunk_batches(buf, raw_chunks, schemas, channels):
            if isinstance(item, McapFormatError):
                self._damage(part.path, item)
                return
            yield from self._emit(part.path, item, schemas, channels)
        if part.chunks is None and self.stats.damage and self.on_damage == "fail":
            path, reason, offset = self.stats.damage[-1]
            raise McapFormatError(f"{path}: {reason}", offset)

    def _chunk_batches(
        self,
        buf: Any,
        raw_chunks: Sequence[mcap_io.RawChunk],
        schemas: dict[int, SchemaInfo],
        channels: dict[int, ChannelInfo],
    ) -> Iterator[MessageBatch | McapFormatError]:
        """Wanted messages of each group of chunks (loaded into one buffer); the first damaged
        chunk ends the run with its error, after the messages of the chunks before it."""
        for group in mcap_io.chunk_groups(raw_chunks, _GROUP_BYTES):
            try:
                batch, _ = mcap_io.load_chunks(buf, group, schemas, channels, verify_crc=self.verify_crc)
            except McapFormatError as err:
                # Rare: load the group's chunks one by one to keep those before the damage.
                for chunk in group:
                    try:
                        batch, _ = mcap_io.load_chunks(
                            buf, [chunk], schemas, channels, verify_crc=self.verify_crc
                        )
                    except McapFormatError as damage:
                        yield damage
                        return
                    self._count([chunk])
                    yield self._wanted(batch, channels)
                yield err  # the group's error stands should its chunks load one by one
                return
            self._count(group)
            yield self._wanted(batch, channels)

    def _count(self, chunks: Sequence[mcap_io.RawChunk]) -> None:
        for chunk in chunks:
            self.stats.bytes_read += chunk.data_end - chunk.offset
            self.stats.bytes_decompressed += chunk.uncompressed_size
            self.stats.chunks_read += 1

    def _wanted(self, batch: MessageBatch, channels: dict[int, ChannelInfo]) -> MessageBatch:
        """The messages of wanted topics (and of unknown channels, which :meth:`_emit` reports)."""
        if self.topics is None or not len(batch):
            return batch
        ids = batch.channel_ids
        first = int(ids[0])
        if (ids == first).all():
            channel = channels.get(first)
            return batch if channel is None or channel.topic in self.topics else batch.select(ids != first)
        unwanted = [cid for cid, ch in channels.items() if ch.topic not in self.topics]
        return batch.select(~np.isin(ids, unwanted)) if unwanted else batch

    def _damage(self, path: str, err: McapFormatError, defer: bool = False) -> None:
        self.stats.damage.append((path, err.reason, err.offset))
        if self.on_damage == "fail" and not defer:
            raise McapFormatError(f"{path}: {err.reason}", err.offset) from err

    def _emit(
        self, path: str, batch: MessageBatch, schemas: dict[int, SchemaInfo], channels: dict[int, ChannelInfo]
    ) -> Iterator[pa.RecordBatch]:
        if not len(batch):
            return
        ids = batch.channel_ids
        first = int(ids[0])
        if (ids == first).all():
            subs = [(first, batch)]
        else:
            subs = [(cid, batch.select(ids == cid)) for cid in np.unique(ids).tolist()]
        names = set(self.schema.names)
        for cid, sub in subs:
            channel = channels.get(cid)
            if channel is None:
                raise McapFormatError(f"{path}: message on unknown channel {cid}", 0)
            if self.topics is not None and channel.topic not in self.topics:
                continue
            n = len(sub)
            self.stats.messages[channel.topic] = self.stats.messages.get(channel.topic, 0) + n
            cols: dict[str, pa.Array] = {}
            if "file" in names:
                cols["file"] = _repeated_string(path, n)
            if "topic" in names:
                cols["topic"] = _repeated_string(channel.topic, n)
            if "log_time" in names:
                cols["log_time"] = pa.array(sub.log_time // 1000, type=_TIMESTAMP_US)
            if "log_time_ns" in names:
                cols["log_time_ns"] = pa.array(sub.log_time)
            if "publish_time_ns" in names:
                cols["publish_time_ns"] = pa.array(sub.publish_time)
            if "sequence" in names:
                cols["sequence"] = pa.array(sub.sequence)
            schema = schemas.get(channel.schema_id)
            if self.raw:
                cols["schema_name"] = _repeated_string(schema.name if schema else "", n)
                cols["message_encoding"] = _repeated_string(channel.message_encoding, n)
                cols["data"] = _payloads(sub)
            elif self.decoded_columns:
                if schema is None:
                    raise UnsupportedSchemaError(f"{path}: channel {channel.topic} has no schema")
                decoded = decoder_for(schema, channel.message_encoding).decode(
                    sub.buf, sub.starts, sub.ends, self.decoded_columns
                )
                for name in self.decoded_columns:
                    if name not in decoded.column_names:
                        raise UnsupportedSchemaError(
                            f"{path}: topic {channel.topic} (schema {schema.name}) has no column {name!r}"
                        )
                    column = decoded.column(name)
                    cols[name] = one_array(column)
            arrays = [
                cols[f.name].cast(f.type) if cols[f.name].type != f.type else cols[f.name]
                for f in self.schema
            ]
            yield pa.RecordBatch.from_arrays(arrays, schema=self.schema)


def _payloads(batch: MessageBatch) -> pa.Array:
    """The message payloads as a binary array (one copy, no bytes object per message)."""
    lengths = batch.ends - batch.starts
    offsets = np.zeros(len(batch) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    with memoryview(batch.buf) as view:
        data = b"".join([view[s:e] for s, e in zip(batch.starts.tolist(), batch.ends.tolist(), strict=True)])
    if offsets[-1] >= 2**31:
        large = pa.Array.from_buffers(
            pa.large_binary(), len(batch), [None, pa.py_buffer(offsets), pa.py_buffer(data)]
        )
        return large.cast(pa.binary())
    return pa.Array.from_buffers(
        pa.binary(), len(batch), [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)], 0
    )


def _repeated_string(value: str, n: int) -> pa.Array:
    """``n`` times ``value`` as a string array, built from two buffers (``pa.repeat`` is slower)."""
    data = value.encode("utf-8")
    if len(data) * n >= 2**31:
        return pa.repeat(pa.scalar(value, pa.string()), n)
    offsets = (np.arange(n + 1, dtype=np.int64) * len(data)).astype(np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data * n)], 0)


def infer_schema(
    paths: Sequence[str], topics: set[str] | None, columns: Sequence[str] | None = None
) -> pa.Schema:
    """Output schema for a read: envelope + decoded columns of the topics' (single) schema."""
    if not topics:
        schema = RAW_SCHEMA
    else:
        found: dict[str, pa.Schema] = {}
        seen: set[str] = set()
        for path in paths:
            with mcap_io.mapped(path) as buf:
                try:
                    summary = mcap_io.read_summary(buf)
                except McapFormatError:
                    summary = None
                if summary is None:
                    res = mcap_io.scan(buf)
                    schemas, channels = res.schemas, res.channels
                else:
                    schemas, channels = summary.schemas, summary.channels
                for ch in channels.values():
                    if ch.topic in topics and ch.schema_id in schemas:
                        sch = schemas[ch.schema_id]
                        seen.add(ch.topic)
                        found[sch.name] = decoder_for(sch, ch.message_encoding).schema
            if set(topics) <= seen:
                break
        if not found:
            raise ValueError(f"none of the input files has topic(s) {sorted(topics)}")
        if len(found) > 1:
            raise ValueError(
                f"topics {sorted(topics)} use different schemas {sorted(found)}; read them separately"
            )
        decoded = next(iter(found.values()))
        schema = pa.schema([*ENVELOPE_SCHEMA, *decoded])
    if columns:
        missing = [c for c in columns if c not in schema.names]
        if missing:
            raise ValueError(f"unknown column(s) {missing}; available: {schema.names}")
        schema = pa.schema([schema.field(c) for c in columns])
    return schema


def parse_list_option(value: str | None) -> list[str] | None:
    """Options arrive as strings: accept a JSON array or a comma-separated list."""
    if value is None or value == "":
        return None
    text = value.strip()
    if text.startswith("["):
        return [str(v) for v in json.loads(text)]
    return [v.strip() for v in text.split(",") if v.strip()]


def decode_file(path: str, *, verify_crc: bool = True) -> Iterator[tuple[str, pa.Table]]:
    """Every message of a file, decoded to typed columns, in one pass: ``(topic, table)`` per batch.

    Each chunk is decompressed once whatever the layout, consecutive chunks into one buffer
    (:func:`~nuro_ml.etl.mcap_io.load_chunks`); each channel's messages are collected across
    chunks into batches worth one decoder call (:class:`~nuro_ml.etl.batching.ChannelBatcher`).
    A topic's tables come in the order of its messages.
    """
    with mcap_io.mapped(path) as buf:
        scan = mcap_io.scan(buf)
        if scan.damage is not None:
            raise scan.damage
        batcher = ChannelBatcher()

        def batches() -> Iterator[tuple[MessageBatch, np.ndarray]]:
            if scan.loose_messages:
                loose = np.asarray(scan.loose_messages, dtype=np.int64)
                yield mcap_io.envelopes(buf, loose), loose
            for group in mcap_io.chunk_groups(scan.chunks, _GROUP_BYTES):
                yield mcap_io.load_chunks(buf, group, scan.schemas, scan.channels, verify_crc=verify_crc)

        def decode(cid: int, sub: MessageBatch) -> tuple[str, pa.Table]:
            channel = scan.channels[cid]
            decoder = decoder_for(scan.schemas[channel.schema_id], channel.message_encoding)
            return channel.topic, decoder.decode(sub.buf, sub.starts, sub.ends)

        for batch, where in batches():
            for cid, sub, _ in batcher.add(batch, where):
                yield decode(cid, sub)
        for cid, sub, _ in batcher.flush():
            yield decode(cid, sub)
