"""Low-level MCAP reading: summary and chunk index, chunk decompression, record framing.

This module parses the MCAP container itself (record headers, chunks, message indexes) and
returns message envelopes as numpy arrays; it never builds one Python object per message. Files
without a summary, or with a damaged tail, are read by a sequential scan that stops at the first
record that does not fit, and reports where that was.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from isal.isal_zlib import crc32

from nuro_ml.etl.arrays import gather_bytes

MAGIC = b"\x89MCAP0\r\n"
OP_HEADER = 0x01
OP_FOOTER = 0x02
OP_SCHEMA = 0x03
OP_CHANNEL = 0x04
OP_MESSAGE = 0x05
OP_CHUNK = 0x06
OP_MESSAGE_INDEX = 0x07
OP_CHUNK_INDEX = 0x08
OP_STATISTICS = 0x0B
OP_DATA_END = 0x0F

_RECORD_HEAD = struct.Struct("<BQ")
_FOOTER = struct.Struct("<BQQQI")
_CHUNK_HEAD = struct.Struct("<QQQII")
_MESSAGE_ENVELOPE = struct.Struct("<HIQQ")


class McapFormatError(Exception):
    """The file is not valid MCAP at ``offset``."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} (at byte offset {offset})")
        self.reason = message
        self.offset = offset


@dataclass(frozen=True)
class SchemaInfo:
    id: int
    name: str
    encoding: str
    data: bytes


@dataclass(frozen=True)
class ChannelInfo:
    id: int
    schema_id: int
    topic: str
    message_encoding: str


@dataclass(frozen=True)
class ChunkInfo:
    """Where a chunk is and which channels it holds (``None`` when unknown: no index)."""

    offset: int
    length: int
    start_time: int
    end_time: int
    compression: str
    compressed_size: int
    uncompressed_size: int
    channel_ids: frozenset[int] | None


@dataclass
class Summary:
    schemas: dict[int, SchemaInfo] = field(default_factory=dict)
    channels: dict[int, ChannelInfo] = field(default_factory=dict)
    chunks: list[ChunkInfo] = field(default_factory=list)
    message_count: int | None = None
    channel_counts: dict[int, int] = field(default_factory=dict)


@dataclass
class MessageBatch:
    """Message envelopes of one chunk; payload ``i`` is ``buf[starts[i]:ends[i]]``."""

    buf: Any
    channel_ids: np.ndarray
    sequence: np.ndarray
    log_time: np.ndarray
    publish_time: np.ndarray
    starts: np.ndarray
    ends: np.ndarray

    def __len__(self) -> int:
        return int(self.channel_ids.shape[0])

    def copy_size(self) -> int:
        """Bytes :func:`concat_batches` copies for this batch: the buffer, or only the payloads
        when they are less than half of it (a chunk mostly holding other channels)."""
        payload = self.payload_bytes()
        return payload if 2 * payload < len(self.buf) else len(self.buf)

    def payload_bytes(self) -> int:
        """Bytes of the messages' payloads (the buffer may hold other records too)."""
        return int((self.ends - self.starts).sum())

    def select(self, mask: np.ndarray) -> MessageBatch:
        """The messages where ``mask`` is true (or at the indexes ``mask``), over the same buffer."""
        return MessageBatch(
            self.buf,
            self.channel_ids[mask],
            self.sequence[mask],
            self.log_time[mask],
            self.publish_time[mask],
            self.starts[mask],
            self.ends[mask],
        )

    def compact(self) -> MessageBatch:
        """The same messages over a new buffer holding only their payloads."""
        offsets, data = gather_bytes(self.buf, self.starts, self.ends - self.starts)
        return MessageBatch(
            data.data if isinstance(data, np.ndarray) else data,
            self.channel_ids,
            self.sequence,
            self.log_time,
            self.publish_time,
            offsets[:-1],
            offsets[1:],
        )


def _string(buf: Any, pos: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<I", buf, pos)
    return bytes(buf[pos + 4 : pos + 4 + n]).decode("utf-8"), pos + 4 + n


def parse_schema(buf: Any, start: int) -> SchemaInfo:
    (sid,) = struct.unpack_from("<H", buf, start)
    name, pos = _string(buf, start + 2)
    encoding, pos = _string(buf, pos)
    (n,) = struct.unpack_from("<I", buf, pos)
    return SchemaInfo(sid, name, encoding, bytes(buf[pos + 4 : pos + 4 + n]))


def parse_channel(buf: Any, start: int) -> ChannelInfo:
    cid, sid = struct.unpack_from("<HH", buf, start)
    topic, pos = _string(buf, start + 4)
    encoding, pos = _string(buf, pos)
    return ChannelInfo(cid, sid, topic, encoding)


def _parse_chunk_index(buf: Any, start: int) -> ChunkInfo:
    t0, t1, offset, length, map_len = struct.unpack_from("<QQQQI", buf, start)
    pos = start + 36
    ids = frozenset(struct.unpack_from("<H", buf, pos + 10 * i)[0] for i in range(map_len // 10))
    pos += map_len + 8  # message index offsets, then message_index_length
    compression, pos = _string(buf, pos)
    compressed, uncompressed = struct.unpack_from("<QQ", buf, pos)
    return ChunkInfo(offset, length, t0, t1, compression, compressed, uncompressed, ids)


def _parse_statistics(buf: Any, start: int) -> tuple[int, dict[int, int]]:
    (count,) = struct.unpack_from("<Q", buf, start)
    (map_len,) = struct.unpack_from("<I", buf, start + 42)
    counts = {}
    for i in range(map_len // 10):
        cid, n = struct.unpack_from("<HQ", buf, start + 46 + 10 * i)
        counts[cid] = n
    return count, counts


@contextmanager
def mapped(path: str | Path) -> Iterator[Any]:
    """Memory-map a file read-only for the duration of the block (empty files map to ``b""``)."""
    with open(path, "rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            yield b""
            return
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            yield mm
        finally:
            # Arrays still viewing the map keep it alive; it is unmapped when they are freed.
            with suppress(BufferError):
                mm.close()


def read_summary(buf: Any, *, chunk_index: bool = True) -> Summary | None:
    """Parse the footer and summary section; ``None`` if the file has no (intact) summary.

    ``chunk_index=False`` skips the chunk index (``Summary.chunks`` stays empty), for readers that
    already know which chunks they want.
    """
    size = len(buf)
    if size < 8 or bytes(buf[:8]) != MAGIC:
        raise McapFormatError("missing MCAP magic at file start", 0)
    if size < 8 + _FOOTER.size + 8 or bytes(buf[size - 8 :]) != MAGIC:
        return None
    op, length, summary_start, _, _ = _FOOTER.unpack_from(buf, size - 8 - _FOOTER.size)
    if op != OP_FOOTER or length != 20 or summary_start == 0 or summary_start >= size:
        return None
    summary = Summary()
    pos, end = summary_start, size - 8 - _FOOTER.size
    while pos < end:
        op, length = _RECORD_HEAD.unpack_from(buf, pos)
        start = pos + 9
        if start + length > end:
            raise McapFormatError("summary record extends past the footer", pos)
        if op == OP_SCHEMA:
            s = parse_schema(buf, start)
            summary.schemas[s.id] = s
        elif op == OP_CHANNEL:
            c = parse_channel(buf, start)
            summary.channels[c.id] = c
        elif op == OP_CHUNK_INDEX and chunk_index:
            summary.chunks.append(_parse_chunk_index(buf, start))
        elif op == OP_STATISTICS:
            summary.message_count, summary.channel_counts = _parse_statistics(buf, start)
        pos = start + length
    summary.chunks.sort(key=lambda c: c.offset)
    return summary


def decompress(compression: str, data: Any, uncompressed_size: int) -> bytes:
    if compression == "":
        return bytes(data)
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().decompress(data, max_output_size=uncompressed_size)
    if compression == "lz4":
        import lz4.frame

        return bytes(lz4.frame.decompress(data))
    raise ValueError(f"unsupported chunk compression {compression!r}")


def _decompress_into(compression: str, data: Any, dest: memoryview) -> int:
    """Decompress ``data`` into ``dest``; the size it decompresses to (``len(dest) + 1`` if larger)."""
    if compression == "zstd":
        import zstandard

        reader = zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True)
        size = len(dest)
        got = 0
        while got < size:
            n = reader.readinto(dest[got:])
            if not n:
                return got
            got += n
        return size + 1 if reader.read(1) else size
    if compression == "":
        out: Any = data
    else:
        out = decompress(compression, data, len(dest))
    n = len(out)
    if n <= len(dest):
        dest[:n] = out
    return n


@dataclass(frozen=True)
class RawChunk:
    """A chunk record located in the file, not yet decompressed."""

    offset: int
    start_time: int
    end_time: int
    uncompressed_size: int
    crc: int
    compression: str
    data_start: int
    data_end: int
    record_end: int = 0  # where the record after the chunk (its message indexes, if any) starts


def chunk_at(buf: Any, offset: int) -> RawChunk:
    """Read the chunk record header at ``offset``."""
    size = len(buf)
    if offset + 9 + 32 > size:
        raise McapFormatError("chunk record truncated", offset)
    op, length = _RECORD_HEAD.unpack_from(buf, offset)
    if op != OP_CHUNK:
        raise McapFormatError(f"expected a chunk record, found opcode 0x{op:02x}", offset)
    if offset + 9 + length > size:
        raise McapFormatError("chunk record extends past end of file", offset)
    t0, t1, usize, crc, clen = _CHUNK_HEAD.unpack_from(buf, offset + 9)
    pos = offset + 9 + 32
    compression = bytes(buf[pos : pos + clen]).decode("utf-8")
    pos += clen
    (data_len,) = struct.unpack_from("<Q", buf, pos)
    pos += 8
    if pos + data_len > offset + 9 + length:
        raise McapFormatError("chunk data longer than its record", offset)
    return RawChunk(offset, t0, t1, usize, crc, compression, pos, pos + data_len, offset + 9 + length)


def load_chunk(buf: Any, chunk: RawChunk, *, verify_crc: bool = False) -> memoryview:
    """Decompress a chunk's records; optionally check the uncompressed CRC."""
    out = _buffer([chunk])
    load_chunk_into(buf, chunk, out, verify_crc=verify_crc)
    return out


def _buffer(chunks: Sequence[RawChunk]) -> memoryview:
    """Room for the chunks' uncompressed bytes; a size no buffer can have is the file's error."""
    try:
        # Not a bytearray, which is zero-filled first: the decompression writes every byte.
        return memoryview(np.empty(sum(c.uncompressed_size for c in chunks), dtype=np.uint8).data)
    except (MemoryError, ValueError) as err:
        biggest = max(chunks, key=lambda c: c.uncompressed_size)
        raise McapFormatError(
            f"chunk header claims {biggest.uncompressed_size} uncompressed bytes ({err})", biggest.offset
        ) from err


def load_chunk_into(buf: Any, chunk: RawChunk, dest: memoryview, *, verify_crc: bool = False) -> None:
    """Decompress a chunk's records into ``dest`` (``chunk.uncompressed_size`` bytes); optionally
    check the uncompressed CRC. Decompressing in place spares a copy per chunk when several chunks
    are read into one buffer (:func:`load_chunks`)."""
    try:
        # A view, not a slice: slicing a memory map copies the compressed bytes.
        with memoryview(buf) as view:
            size = _decompress_into(chunk.compression, view[chunk.data_start : chunk.data_end], dest)
    except ValueError as err:
        raise McapFormatError(f"chunk does not decompress: {err}", chunk.offset) from err
    except Exception as err:  # zstd/lz4 raise their own error types for corrupt frames
        raise McapFormatError(f"chunk does not decompress: {err}", chunk.offset) from err
    if size != chunk.uncompressed_size:
        found = f"more than {chunk.uncompressed_size}" if size > chunk.uncompressed_size else str(size)
        raise McapFormatError(
            f"chunk decompressed to {found} bytes, header says {chunk.uncompressed_size}", chunk.offset
        )
    if verify_crc and chunk.crc and crc32(dest) != chunk.crc:
        raise McapFormatError("chunk CRC mismatch", chunk.offset)


def chunk_groups(chunks: Sequence[RawChunk], max_bytes: int) -> Iterator[list[RawChunk]]:
    """Consecutive chunks of together at most ``max_bytes`` uncompressed bytes (a larger one alone)."""
    group: list[RawChunk] = []
    size = 0
    for chunk in chunks:
        if group and size + chunk.uncompressed_size > max_bytes:
            yield group
            group, size = [], 0
        group.append(chunk)
        size += chunk.uncompressed_size
    if group:
        yield group


def load_chunks(
    buf: Any,
    chunks: Sequence[RawChunk],
    schemas: dict[int, SchemaInfo] | None = None,
    channels: dict[int, ChannelInfo] | None = None,
    *,
    verify_crc: bool = False,
) -> tuple[MessageBatch, np.ndarray]:
    """The messages of consecutive chunks as one batch over one buffer, and the file offset of
    the chunk holding each message.

    The chunks are decompressed straight into that buffer, so joining them costs no copy; records
    are framed with the message indexes that follow each chunk as hints (see
    :func:`frame_records`). The first chunk that does not load raises :class:`McapFormatError`
    naming it.
    """
    out = _buffer(chunks)
    positions: list[np.ndarray] = []
    counts: list[int] = []
    base = 0
    for chunk in chunks:
        end = base + chunk.uncompressed_size
        with out[base:end] as region:
            load_chunk_into(buf, chunk, region, verify_crc=verify_crc)
            found = _positions(region, chunk.offset, schemas, channels, message_offsets(buf, chunk))
        positions.append(found + base)
        counts.append(int(found.shape[0]))
        base = end
    where = np.repeat(np.array([c.offset for c in chunks], dtype=np.int64), counts)
    return envelopes(out, np.concatenate(positions) if positions else np.empty(0, np.int64)), where


def _uints(arr: np.ndarray, pos: np.ndarray, dtype: str) -> np.ndarray:
    """The little-endian integers of type ``dtype`` stored at byte offsets ``pos`` of ``arr``."""
    size = np.dtype(dtype).itemsize
    windows = np.ndarray(shape=(max(0, arr.shape[0] - size + 1),), dtype=dtype, buffer=arr, strides=(1,))
    return windows[pos]


def message_offsets(buf: Any, chunk: RawChunk) -> np.ndarray | None:
    """Offsets of the chunk's message records, from the message index records that follow it.

    Only a hint for :func:`frame_records`, which checks it; ``None`` when there is none.
    """
    size = len(buf)
    pos = chunk.record_end
    found: list[np.ndarray] = []
    while pos > 0 and pos + 9 + 6 <= size:
        op, length = _RECORD_HEAD.unpack_from(buf, pos)
        if op != OP_MESSAGE_INDEX or pos + 9 + length > size:
            break
        (n,) = struct.unpack_from("<I", buf, pos + 11)
        if 6 + n > length or n % 16:
            return None
        # (log_time, offset) pairs; the offsets are every second uint64.
        found.append(np.frombuffer(buf, dtype="<u8", count=n // 8, offset=pos + 15)[1::2].copy())
        pos += 9 + length
    if not found:
        return None
    offsets = np.sort(np.concatenate(found))
    if offsets.shape[0] and (offsets[-1] >= 2**62 or (offsets[1:] == offsets[:-1]).any()):
        return None
    return offsets.astype(np.int64)


def _walk(
    data: Any,
    pos: int,
    stop: int,
    base: int,
    schemas: dict[int, SchemaInfo] | None,
    channels: dict[int, ChannelInfo] | None,
    positions: list[int],
) -> int:
    """Walk records from ``pos`` while before ``stop``; returns where the walk ended."""
    n = len(data)
    append = positions.append
    unpack = _RECORD_HEAD.unpack_from
    while pos < stop:
        if pos + 9 > n:
            raise McapFormatError("record header truncated inside chunk", base + pos)
        op, length = unpack(data, pos)
        if pos + 9 + length > n:
            raise McapFormatError("record extends past end of chunk", base + pos)
        if op == OP_MESSAGE:
            append(pos)
        elif op == OP_SCHEMA and schemas is not None:
            s = parse_schema(data, pos + 9)
            schemas[s.id] = s
        elif op == OP_CHANNEL and channels is not None:
            c = parse_channel(data, pos + 9)
            channels[c.id] = c
        pos += 9 + length
    return pos


def _walk_hinted(
    data: Any,
    base: int,
    schemas: dict[int, SchemaInfo] | None,
    channels: dict[int, ChannelInfo] | None,
    hint: np.ndarray,
) -> np.ndarray | None:
    """Message positions, walking only the records between the hinted message records.

    Every hinted record is checked to start exactly where the record before it ends (or where
    the walk of the records between them ends), so the result is the sequential walk's; ``None``
    if the hint does not fit.
    """
    n = len(data)
    if not hint.shape[0] or hint[0] < 0 or hint[-1] + 9 > n:
        return None
    arr = np.frombuffer(data, dtype=np.uint8)
    if (arr[hint] != OP_MESSAGE).any():
        return None
    lengths = _uints(arr, hint + 1, "<u8")
    if (lengths > n).any():
        return None
    ends = hint + 9 + lengths.astype(np.int64)
    if ends[-1] > n or (ends[:-1] > hint[1:]).any():
        return None
    gaps = np.flatnonzero(ends[:-1] != hint[1:])
    segments = [(0, int(hint[0])), *zip(ends[gaps].tolist(), hint[gaps + 1].tolist(), strict=True)]
    segments.append((int(ends[-1]), n))
    found: list[int] = []
    for start, stop in segments:
        if start < stop and _walk(data, start, stop, base, schemas, channels, found) != stop:
            return None
    return np.sort(np.concatenate([hint, np.asarray(found, dtype=np.int64)])) if found else hint


def frame_records(
    data: Any,
    base: int = 0,
    schemas: dict[int, SchemaInfo] | None = None,
    channels: dict[int, ChannelInfo] | None = None,
    hint: np.ndarray | None = None,
) -> MessageBatch:
    """Split a run of records (a decompressed chunk) into message envelopes.

    Schema and channel records met on the way are added to ``schemas`` / ``channels``. A record
    that does not fit raises :class:`McapFormatError` with ``base`` + its position. ``hint``
    (from :func:`message_offsets`) lets the vectorised check of the message records replace
    walking them one by one; the result is the same with or without it.
    """
    return envelopes(data, _positions(data, base, schemas, channels, hint))


def _positions(
    data: Any,
    base: int,
    schemas: dict[int, SchemaInfo] | None,
    channels: dict[int, ChannelInfo] | None,
    hint: np.ndarray | None,
) -> np.ndarray:
    """Where the message records of ``data`` start (see :func:`frame_records`)."""
    if hint is not None:
        positions = _walk_hinted(data, base, schemas, channels, hint)
        if positions is not None:
            return positions
    found: list[int] = []
    _walk(data, 0, len(data), base, schemas, channels, found)
    return np.asarray(found, dtype=np.int64)


def concat_batches(batches: list[MessageBatch]) -> MessageBatch:
    """One batch over one buffer joined from ``batches`` (a single batch is returned as it is).

    Each batch contributes its whole buffer, or only its payloads (see :meth:`MessageBatch.copy_size`).
    """
    if len(batches) == 1:
        return batches[0]
    parts: list[Any] = []
    starts: list[np.ndarray] = []
    ends: list[np.ndarray] = []
    base = 0
    for b in batches:
        if b.copy_size() == len(b.buf):
            parts.append(b.buf)
            starts.append(b.starts + base)
            ends.append(b.ends + base)
            base += len(b.buf)
            continue
        lengths = b.ends - b.starts
        placed = base + np.cumsum(lengths) - lengths
        starts.append(placed)
        ends.append(placed + lengths)
        base += int(lengths.sum())
        view = memoryview(b.buf)
        parts.extend(view[s:e] for s, e in zip(b.starts.tolist(), b.ends.tolist(), strict=True))
    return MessageBatch(
        b"".join(parts),
        np.concatenate([b.channel_ids for b in batches]),
        np.concatenate([b.sequence for b in batches]),
        np.concatenate([b.log_time for b in batches]),
        np.concatenate([b.publish_time for b in batches]),
        np.concatenate(starts),
        np.concatenate(ends),
    )


def envelopes(data: Any, positions: np.ndarray) -> MessageBatch:
    """Vectorised parse of message records starting at ``positions`` in ``data``."""
    arr = np.frombuffer(data, dtype=np.uint8)
    if positions.shape[0] == 0:
        empty = np.empty(0, dtype=np.int64)
        return MessageBatch(data, np.empty(0, dtype=np.uint16), empty, empty, empty, empty, empty)
    length = _uints(arr, positions + 1, "<u8").astype(np.int64)
    channel = _uints(arr, positions + 9, "<u2")
    seq = _uints(arr, positions + 11, "<u4").astype(np.int64)
    log_time = _uints(arr, positions + 15, "<u8").astype(np.int64)
    publish = _uints(arr, positions + 23, "<u8").astype(np.int64)
    starts = positions + 31
    return MessageBatch(data, channel, seq, log_time, publish, starts, positions + 9 + length)


@dataclass
class ScanResult:
    """What a sequential scan found: every chunk and loose message run, and any damage."""

    schemas: dict[int, SchemaInfo] = field(default_factory=dict)
    channels: dict[int, ChannelInfo] = field(default_factory=dict)
    chunks: list[RawChunk] = field(default_factory=list)
    loose_messages: list[int] = field(default_factory=list)
    data_end: int | None = None
    damage: McapFormatError | None = None


def scan(buf: Any) -> ScanResult:
    """Walk the data section record by record without decompressing, stopping at damage."""
    result = ScanResult()
    size = len(buf)
    if size < 8 or bytes(buf[:8]) != MAGIC:
        result.damage = McapFormatError("missing MCAP magic at file start", 0)
        return result
    pos = 8
    while pos < size:
        if pos + 9 > size:
            result.damage = McapFormatError("truncated: record header cut off", pos)
            return result
        op, length = _RECORD_HEAD.unpack_from(buf, pos)
        if op == 0 or op > 0x0F:
            result.damage = McapFormatError(f"invalid record opcode 0x{op:02x}", pos)
            return result
        if pos + 9 + length > size:
            result.damage = McapFormatError("truncated: record extends past end of file", pos)
            return result
        start = pos + 9
        try:
            if op == OP_SCHEMA:
                s = parse_schema(buf, start)
                result.schemas[s.id] = s
            elif op == OP_CHANNEL:
                c = parse_channel(buf, start)
                result.channels[c.id] = c
            elif op == OP_CHUNK:
                result.chunks.append(chunk_at(buf, pos))
            elif op == OP_MESSAGE:
                result.loose_messages.append(pos)
            elif op == OP_DATA_END:
                result.data_end = pos
                return result
        except (struct.error, UnicodeDecodeError) as err:
            result.damage = McapFormatError(f"malformed record: {err}", pos)
            return result
        except McapFormatError as err:
            result.damage = err
            return result
        pos = start + length
    result.damage = McapFormatError("truncated: no data end record", pos)
    return result
