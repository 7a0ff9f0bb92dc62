"""Arrow helpers shared by the reader, the file worker and the transforms."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from numpy.lib.stride_tricks import as_strided

#: Mean length from which byte ranges are gathered with one ``join`` instead of numpy indexing.
_JOIN_MIN = 256
#: Padding per range (bytes) accepted when ranges of different lengths are copied as equal rows.
_PAD_SLACK = 16
#: Longest range copied as a row of a sliding-window view.
_ROW_MAX = 1024


def one_array(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A column as one array, without a copy when it already is one chunk.

    ``ChunkedArray.combine_chunks`` copies even a single chunk, which for payload columns means
    copying every image or point cloud again.
    """
    if isinstance(column, pa.ChunkedArray):
        return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    return column


def gather_bytes(buf: Any, pos: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, Any]:
    """Arrow-style offsets (int64, n + 1) and the concatenated bytes of ``buf[pos:pos+len]``.

    One copy of the bytes, and no Python object per range unless the ranges are long enough for
    slicing to cost less than indexing every byte.
    """
    n = int(pos.shape[0])
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    if total == 0:
        return offsets, b""
    arr = np.frombuffer(buf, dtype=np.uint8)
    longest = int(lengths.max())
    if (
        longest <= _ROW_MAX
        and longest * n <= 2 * total + _PAD_SLACK * n
        and int((pos + longest).max()) <= arr.shape[0]
    ):
        # Ranges of similar lengths: rows of a sliding-window view, copied by one indexing (a
        # copy per range, no index per byte), then the padding of the shorter ones dropped.
        rows = as_strided(arr, shape=(arr.shape[0] - longest + 1, longest), strides=(1, 1))[pos]
        if total == longest * n:
            return offsets, rows.reshape(-1)
        return offsets, rows[np.arange(longest) < lengths[:, None]]
    if total >= _JOIN_MIN * n:
        with memoryview(buf) as view:
            return offsets, b"".join(
                [view[p : p + ln] for p, ln in zip(pos.tolist(), lengths.tolist(), strict=True)]
            )
    idx = np.repeat(pos - offsets[:-1], lengths) + np.arange(total)
    return offsets, arr[idx]
