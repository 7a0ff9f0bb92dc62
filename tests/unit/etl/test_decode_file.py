"""One-pass decoding of whole files: chunks loaded into one buffer, channels batched across chunks."""

from __future__ import annotations

import shutil
from datetime import date

import numpy as np
import pyarrow as pa
import pytest
from mcap.reader import make_reader
from mcap_protobuf.decoder import DecoderFactory
from nuro_ml.etl import batching, mcap_io, proto_schema, reader
from nuro_ml.etl.batching import ChannelBatcher
from nuro_ml.etl.generator import generate_interval
from nuro_ml.etl.mcap_io import MessageBatch

from tests.unit.etl.test_proto_decode import _leaf_value


@pytest.fixture(scope="module", params=["zstd", "lz4", "none"])
def interleaved(request, tmp_path_factory):
    """An interleaved drive (every channel in each chunk) of small chunks."""
    root = tmp_path_factory.mktemp(f"raw-{request.param}")
    [path] = generate_interval(
        root,
        [date(2024, 5, 2)],
        ["veh-003"],
        drive_seconds=3,
        seed=17,
        encoding="protobuf",
        lidar_points=128,
        image_bytes=1024,
        chunk_size=16 << 10,
        compression=request.param,
    )
    return str(path)


def _upstream(path: str) -> dict[str, list]:
    with open(path, "rb") as fh:
        found: dict[str, list] = {}
        for _, channel, _, msg in make_reader(fh, decoder_factories=[DecoderFactory()]).iter_decoded_messages(
            log_time_order=False
        ):
            found.setdefault(channel.topic, []).append(msg)
    return found


def test_decode_file_equals_upstream_decoders(interleaved, monkeypatch):
    # Small loads and batches: channels are held across several loads and passed on in parts.
    monkeypatch.setattr(reader, "_GROUP_BYTES", 48 << 10)
    monkeypatch.setattr(batching, "MIN_MESSAGES", 50)
    monkeypatch.setattr(batching, "MIN_BYTES", 24 << 10)
    tables: dict[str, list[pa.Table]] = {}
    for topic, table in reader.decode_file(interleaved):
        tables.setdefault(topic, []).append(table)
    ref = _upstream(interleaved)
    assert tables.keys() == ref.keys() and len(ref) >= 6
    assert any(len(parts) > 1 for parts in tables.values())
    for topic, msgs in ref.items():
        table = pa.concat_tables(tables[topic])
        assert table.num_rows == len(msgs)
        for leaf in proto_schema.leaves(msgs[0].DESCRIPTOR):
            column = table.column(leaf.name)
            if pa.types.is_timestamp(column.type):
                column = column.cast(pa.int64())
            assert column.to_pylist() == [_leaf_value(m, leaf) for m in msgs], (topic, leaf.name)


def test_load_chunks_equals_chunk_by_chunk(interleaved):
    with mcap_io.mapped(interleaved) as buf:
        scan = mcap_io.scan(buf)
        chunks = scan.chunks[:7]
        batch, where = mcap_io.load_chunks(buf, chunks, verify_crc=True)
        singles = [mcap_io.frame_records(mcap_io.load_chunk(buf, c), c.offset) for c in chunks]
    assert len(batch) == sum(len(s) for s in singles) > 0
    assert where.tolist() == [c.offset for c, s in zip(chunks, singles, strict=True) for _ in range(len(s))]
    assert _payloads(batch) == [p for s in singles for p in _payloads(s)]
    for name in ("channel_ids", "sequence", "log_time", "publish_time"):
        assert np.array_equal(getattr(batch, name), np.concatenate([getattr(s, name) for s in singles]))


def _payloads(batch: MessageBatch) -> list[bytes]:
    return [bytes(batch.buf[s:e]) for s, e in zip(batch.starts.tolist(), batch.ends.tolist(), strict=True)]


def test_load_chunks_names_the_damaged_chunk(interleaved, tmp_path):
    bad = tmp_path / "bad.mcap"
    shutil.copy(interleaved, bad)
    with mcap_io.mapped(interleaved) as buf:
        chunks = mcap_io.scan(buf).chunks
    damaged = chunks[3]
    with open(bad, "r+b") as fh:
        fh.seek((damaged.data_start + damaged.data_end) // 2)
        fh.write(b"\xde\xad\xbe\xef\x00\x11")
    with mcap_io.mapped(bad) as buf, pytest.raises(mcap_io.McapFormatError) as err:
        mcap_io.load_chunks(buf, mcap_io.scan(buf).chunks[:6], verify_crc=True)
    assert err.value.offset == damaged.offset
    assert "CRC" in err.value.reason or "decompress" in err.value.reason


def test_load_chunks_rejects_a_wrong_uncompressed_size(interleaved):
    with mcap_io.mapped(interleaved) as buf:
        chunk = mcap_io.scan(buf).chunks[0]
        for size in (chunk.uncompressed_size - 1, chunk.uncompressed_size + 1, 2**62):
            wrong = mcap_io.RawChunk(**{**chunk.__dict__, "uncompressed_size": size})
            with pytest.raises(mcap_io.McapFormatError, match=r"header (says|claims)") as err:
                mcap_io.load_chunks(buf, [wrong])
            assert err.value.offset == chunk.offset


def _batch(channels: list[int], sizes: list[int]) -> tuple[MessageBatch, np.ndarray]:
    """Messages on ``channels`` with payloads of ``sizes`` bytes, each filled with its index."""
    parts, starts, ends, pos = [], [], [], 0
    for i, size in enumerate(sizes):
        parts.append(b"#" + bytes([i % 251]) * size)
        starts.append(pos + 1)
        pos += size + 1
        ends.append(pos)
    n = len(sizes)
    seq = np.arange(n, dtype=np.int64)
    batch = MessageBatch(
        b"".join(parts),
        np.asarray(channels, dtype=np.uint16),
        seq,
        seq * 10,
        seq * 10,
        np.asarray(starts, dtype=np.int64),
        np.asarray(ends, dtype=np.int64),
    )
    return batch, seq + 1000


def test_channel_batcher_keeps_each_channels_order_and_payloads():
    batcher = ChannelBatcher(min_messages=5, min_bytes=10_000, max_held_bytes=1 << 20)
    out: list[tuple[int, MessageBatch, np.ndarray]] = []
    expected: dict[int, list[tuple[int, bytes]]] = {}
    for k in range(4):
        channels = [1, 2, 1, 3, 1, 2, 1]
        sizes = [3, 4, 3, 20_000, 3, 4, 3]
        batch, where = _batch(channels, sizes)
        where = where + 100 * k
        for cid, w, payload in zip(channels, where.tolist(), _payloads(batch), strict=True):
            expected.setdefault(cid, []).append((w, payload))
        out.extend(batcher.add(batch, where))
    # Channel 3 has enough bytes in each batch: passed on at once, over the batch's own buffer.
    big = [b for cid, b, _ in out if cid == 3]
    assert len(big) == 4 and all(len(b) == 1 and len(b.buf) > 20_000 for b in big)
    # Channel 1 (4 messages a batch) is passed on once it has 5 or more.
    assert [len(b) for cid, b, _ in out if cid == 1] == [8, 8]
    out.extend(batcher.flush())
    assert [len(b) for cid, b, _ in out if cid == 2] == [6, 2]  # the rest at the end
    got: dict[int, list[tuple[int, bytes]]] = {}
    for cid, b, where in out:
        assert len(where) == len(b) and (b.channel_ids == cid).all()
        for w, payload in zip(where.tolist(), _payloads(b), strict=True):
            got.setdefault(cid, []).append((w, payload))
    assert got == expected


def test_channel_batcher_passes_everything_on_when_holding_too_much():
    batcher = ChannelBatcher(min_messages=100, min_bytes=1 << 20, max_held_bytes=1000)
    batch, where = _batch([1, 2, 1, 2], [300, 300, 300, 300])
    out = list(batcher.add(batch, where))
    assert sorted((cid, len(b)) for cid, b, _ in out) == [(1, 2), (2, 2)]
    assert list(batcher.flush()) == []
