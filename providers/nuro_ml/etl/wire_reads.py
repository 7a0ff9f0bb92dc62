"""Vectorised reads of Protobuf wire data: tags, varints of any width, fixed-width values and
byte strings at many per-message positions of one buffer at once (numpy, no Python per message).

Used by :mod:`nuro_ml.etl.proto_execute` to check and gather the fields of many messages that
share a field sequence.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from numpy.lib.stride_tricks import as_strided

from nuro_ml.etl.arrays import gather_bytes

U64 = np.uint64
_HI_BITS = U64(0x8080_8080_8080_8080)
_SEVEN = [U64(0x7F << (7 * k)) for k in range(8)]
_SHIFTS = [U64(k) for k in range(64)]
#: Continuation-bit mask of a varint of w bytes, and its expected value (all set but the last).
_CONT_MASK = [U64(0)] + [U64(sum(0x80 << (8 * k) for k in range(w))) for w in range(1, 9)]
_CONT_PATTERN = [U64(0)] + [U64(sum(0x80 << (8 * k) for k in range(w - 1))) for w in range(1, 9)]
#: Bytes of a varint by width (0: longer than 8 bytes, all 8 are part of it).
_WIDTH_MASK = np.array([2**64 - 1] + [2 ** (8 * w) - 1 for w in range(1, 8)] + [2**64 - 1], dtype=np.uint64)
TAG_MASK = [U64(2 ** (8 * w) - 1) for w in range(9)]
#: Width reported for an invalid varint (11+ bytes): moves the position past any message end.
_BAD_WIDTH = 1 << 40
MAX_LEN = U64(1 << 40)


def _strided(arr: np.ndarray, size: int, dtype: str) -> np.ndarray:
    """``out[p]`` is the ``dtype`` value stored in ``arr[p:p + size]`` (unaligned reads)."""
    return np.ndarray(shape=(max(0, arr.shape[0] - size + 1),), dtype=dtype, buffer=arr, strides=(1,))


def compact(x: np.ndarray, width: int) -> np.ndarray:
    """Value of varints whose bytes (little-endian, at most ``width``) are in ``x``."""
    val = x & _SEVEN[0]
    for k in range(1, width):
        val |= (x >> _SHIFTS[k]) & _SEVEN[k]
    return val


class WireReads:
    """Reads of tags, varints and fixed-width values at many positions of one buffer at once.

    Positions of messages that already failed a check may point anywhere (even past the buffer);
    every read is clamped so it stays inside the buffer, and such messages are rejected later.
    """

    def __init__(self, buf: Any, max_end: int) -> None:
        self.buf = buf
        arr = np.frombuffer(buf, dtype=np.uint8)
        self.size = int(arr.shape[0])
        if self.size < 16:
            arr = np.concatenate([arr, np.zeros(16, dtype=np.uint8)])
        self.arr = arr
        self.last = int(arr.shape[0]) - 1
        self.lim8 = int(arr.shape[0]) - 8
        self.u64 = _strided(arr, 8, "<u8")
        self._views: dict[str, tuple[np.ndarray, int]] = {}
        # The 8-byte window at a position in the last 7 bytes runs past the buffer: such windows
        # are read from a zero-padded copy of the tail instead.
        self.tail_base = max(0, self.size - 16)
        self.tail: np.ndarray | None = None
        if max_end > self.lim8:
            padded = np.concatenate([arr[self.tail_base :], np.zeros(8, dtype=np.uint8)])
            self.tail = _strided(padded, 8, "<u8")

    def u8(self, pos: np.ndarray) -> np.ndarray:
        return self.arr[np.minimum(pos, self.last)]

    def window(self, pos: np.ndarray) -> np.ndarray:
        """The 8 bytes from each position as a little-endian uint64 (zeros past the buffer)."""
        x = self.u64[np.minimum(pos, self.lim8)]
        if self.tail is not None:
            over = pos > self.lim8
            if over.any():
                i = np.flatnonzero(over)
                x[i] = self.tail[np.minimum(pos[i] - self.tail_base, self.tail.shape[0] - 1)]
        return x

    def rows(self, pos: np.ndarray, span: int) -> np.ndarray | None:
        """The ``span`` bytes from each position as the rows of a new array (``None`` when one
        of them runs past the buffer)."""
        if not pos.shape[0] or int(pos.max()) + span > self.arr.shape[0] or int(pos.min()) < 0:
            return None
        return as_strided(self.arr, shape=(self.arr.shape[0] - span + 1, span), strides=(1, 1))[pos]

    def fixed(self, pos: np.ndarray, dtype: str) -> np.ndarray:
        view = self._views.get(dtype)
        if view is None:
            size = np.dtype(dtype).itemsize
            view = (_strided(self.arr, size, dtype), int(self.arr.shape[0]) - size)
            self._views[dtype] = view
        return view[0][np.minimum(pos, view[1])]

    def varint(self, pos: np.ndarray, width0: int) -> tuple[np.ndarray, Any]:
        """Values (uint64) and widths of the varints at ``pos``; ``width0`` is the expected width."""
        if width0 == 1:
            b = self.u8(pos)
            if not (b & 0x80).any():
                return b.astype(np.uint64), 1
        x = self.window(pos)
        if width0 <= 8 and ((x & _CONT_MASK[width0]) == _CONT_PATTERN[width0]).all():
            return compact(x, width0), width0
        term = ~x & _HI_BITS
        lowest = term & (~term + U64(1))
        # lowest is 2**(8w - 1) for a varint of w <= 8 bytes and 0 for a longer one.
        width = (np.frexp(lowest.astype(np.float64))[1] >> 3).astype(np.int64)
        val = compact(x & _WIDTH_MASK[width], 8)
        long = np.flatnonzero(width == 0)
        if long.shape[0]:
            p = pos[long]
            b8 = self.u8(p + 8).astype(np.uint64)
            b9 = self.u8(p + 9).astype(np.uint64)
            ends8 = b8 < 0x80
            v = val[long] | ((b8 & U64(0x7F)) << _SHIFTS[56])
            # Bits of a tenth byte beyond the 64th bit of the value are dropped, as upb does.
            val[long] = np.where(ends8, v, v | ((b9 & U64(1)) << _SHIFTS[63]))
            width[long] = np.where(ends8, 9, np.where(b9 < 0x80, 10, _BAD_WIDTH))
        return val, width

    def gather_bytes(self, pos: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, Any]:
        """Arrow-style offsets (int64, n + 1) and the concatenated bytes of ``buf[pos:pos+len]``."""
        return gather_bytes(self.buf, pos, lengths)

    def binary(self, pos: np.ndarray, lengths: np.ndarray, arrow_type: pa.DataType) -> pa.Array:
        offsets, data = self.gather_bytes(pos, lengths)
        n = int(pos.shape[0])
        if offsets[-1] < 2**31:
            return pa.Array.from_buffers(
                arrow_type, n, [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)], 0
            )
        large = pa.large_binary() if arrow_type == pa.binary() else pa.large_string()
        array = pa.Array.from_buffers(large, n, [None, pa.py_buffer(offsets), pa.py_buffer(data)], 0)
        return array.cast(arrow_type)
