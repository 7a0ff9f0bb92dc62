"""Feast's Redis online-store format, built from and decoded to Arrow columns in bulk.

The layout (feast ``infra/online_stores/redis.py``) is one Redis hash per entity key:

* key: ``serialize_entity_key(entity_key, version=3) + project`` — a little-endian uint32
  key count, then per join key (sorted) ``<type=STRING:u32><len:u32><name>``, then per value
  ``<value type:u32><len:u32><bytes>`` (strings UTF-8, int64 8-byte LE, int32 4-byte LE);
* one field per feature: ``mmh3_32(f"{view}:{feature}")`` as 4 little-endian bytes, holding a
  serialized ``feast.types.Value`` protobuf (empty bytes for null or NaN);
* ``_ts:{view}``: a serialized ``google.protobuf.Timestamp`` of the row's event time.

The encoders below produce byte-identical output to Feast's own per-row protobuf code path, but
work on whole Arrow arrays (numpy for fixed-width types), which is what makes bulk writes fast.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# feast.types.ValueType numbers used in entity keys.
_VT_STRING = 2
_VT_INT32 = 3
_VT_INT64 = 4

# Wire tags of feast.types.Value fields (field number << 3 | wire type).
_TAG_STRING = 0x12  # 2, length-delimited
_TAG_INT32 = 0x18  # 3, varint
_TAG_INT64 = 0x20  # 4, varint
_TAG_DOUBLE = 0x29  # 5, 64-bit
_TAG_FLOAT = 0x35  # 6, 32-bit
_TAG_BOOL = 0x38  # 7, varint

# The wire tag a Value of each scalar type starts with (the oneof member Feast sets for it).
VALUE_TAGS = {
    "STRING": _TAG_STRING,
    "INT32": _TAG_INT32,
    "INT64": _TAG_INT64,
    "DOUBLE": _TAG_DOUBLE,
    "FLOAT": _TAG_FLOAT,
    "BOOL": _TAG_BOOL,
}

#: Join key value types the key encoder writes.
ENTITY_KEY_TYPES = frozenset({"STRING", "INT64", "INT32"})


@functools.cache
def feature_value_types() -> frozenset[str]:
    """Feature value types :func:`encode_values` writes: every type Feast defines.

    The common scalars are encoded here; the rest column-wise by Feast's own converter (the
    call Feast's materialization makes), so the bytes are Feast's by construction.
    """
    from feast.value_type import ValueType

    return frozenset(vt.name for vt in ValueType if vt.name not in ("UNKNOWN", "NULL"))


U32 = struct.Struct("<I")
_DOUBLE = struct.Struct("<d")
_FLOAT = struct.Struct("<f")
_MASK64 = (1 << 64) - 1


def varint(value: int) -> bytes:
    """Protobuf base-128 varint (negative numbers as 64-bit two's complement, like int64)."""
    value &= _MASK64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode a varint at ``pos``; returns (unsigned value, next position)."""
    result = 0
    shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def field_hash(view_name: str, feature: str) -> bytes:
    """The hash field Feast stores a feature under (``_mmh3`` in feast's helpers)."""
    from feast.infra.online_stores.helpers import _mmh3

    return bytes(_mmh3(f"{view_name}:{feature}"))


def ts_field(view_name: str) -> bytes:
    return f"_ts:{view_name}".encode()


# --------------------------------------------------------------------------- entity keys


def _key_value_bytes(array: pa.Array, value_type: str) -> tuple[int, list[bytes]]:
    if value_type == "STRING":
        return _VT_STRING, [v.encode("utf-8") for v in array.to_pylist()]
    if value_type == "INT64":
        data = np.asarray(array.to_numpy(zero_copy_only=False), dtype="<i8").tobytes()
        return _VT_INT64, [data[i : i + 8] for i in range(0, len(data), 8)]
    if value_type == "INT32":
        data = np.asarray(array.to_numpy(zero_copy_only=False), dtype="<i4").tobytes()
        return _VT_INT32, [data[i : i + 4] for i in range(0, len(data), 4)]
    raise ValueError(f"Entity key type {value_type} is not supported by the fast Redis path")


def string_key_prefix(join_key: str) -> bytes:
    """What every key of a single STRING join key starts with, up to the value's length."""
    name = join_key.encode("utf-8")
    return U32.pack(1) + U32.pack(_VT_STRING) + U32.pack(len(name)) + name + U32.pack(_VT_STRING)


def entity_keys(columns: dict[str, pa.Array], value_types: dict[str, str], project: str) -> list[bytes]:
    """Redis keys for every row: ``serialize_entity_key(..., 3) + project``.

    :param columns: join key name -> Arrow array (no nulls).
    :param value_types: join key name -> Feast value type name (STRING, INT64, INT32).
    :param project: Feast project name.
    """
    names = sorted(columns)
    header = bytearray(U32.pack(len(names)))
    for name in names:
        encoded = name.encode("utf-8")
        header += U32.pack(_VT_STRING) + U32.pack(len(encoded)) + encoded
    prefix = bytes(header)
    suffix = project.encode("utf-8")
    parts = [_key_value_bytes(columns[n], value_types[n]) for n in names]
    pack = U32.pack
    if len(parts) == 1:
        vt, values = parts[0]
        tag = pack(vt)
        return [b"".join((prefix, tag, pack(len(v)), v, suffix)) for v in values]
    out = []
    for row in zip(*(values for _, values in parts), strict=True):
        pieces = [prefix]
        for (vt, _), v in zip(parts, row, strict=True):
            pieces += (pack(vt), pack(len(v)), v)
        pieces.append(suffix)
        out.append(b"".join(pieces))
    return out


# --------------------------------------------------------------------------- values


def _fixed_width(tag: int, data: np.ndarray, valid: np.ndarray) -> list[bytes]:
    n = data.shape[0]
    width = data.dtype.itemsize + 1
    mat = np.empty((n, width), dtype=np.uint8)
    mat[:, 0] = tag
    mat[:, 1:] = data.view(np.uint8).reshape(n, width - 1)
    blob = mat.tobytes()
    return [blob[i * width : (i + 1) * width] if ok else b"" for i, ok in enumerate(valid.tolist())]


def float_column(array: pa.Array | pa.ChunkedArray, dtype: str = "<f8") -> np.ndarray:
    """A float column as numpy, nulls as NaN (Feast stores both as an empty value)."""
    return np.asarray(pc.fill_null(array.cast(pa.float64()), np.nan).to_numpy(), dtype=dtype)


def fixed_field_block(
    hashes: Sequence[bytes], columns: Sequence[np.ndarray]
) -> tuple[bytes, int, np.ndarray]:
    """RESP ``field value`` pairs of several DOUBLE features, one fixed-width block per row.

    Returns the concatenated blocks, the block width and a mask of rows holding a null/NaN
    (those rows need the variable-width encoding and must not use their block).
    """
    n = columns[0].shape[0] if columns else 0
    part = 4 + 4 + 2 + 4 + 9 + 2  # $4\r\n<hash>\r\n$9\r\n<tag+8 bytes>\r\n
    mat = np.empty((n, part * len(columns)), dtype=np.uint8)
    bad = np.zeros(n, dtype=bool)
    for c, (h, data) in enumerate(zip(hashes, columns, strict=True)):
        o = c * part
        prefix = np.frombuffer(b"$4\r\n" + h + b"\r\n$9\r\n" + bytes((_TAG_DOUBLE,)), dtype=np.uint8)
        mat[:, o : o + 15] = prefix
        mat[:, o + 15 : o + 23] = np.ascontiguousarray(data, dtype="<f8").view(np.uint8).reshape(n, 8)
        mat[:, o + 23] = 13
        mat[:, o + 24] = 10
        bad |= np.isnan(data)
    return mat.tobytes(), part * len(columns), bad


def encode_values(array: pa.Array, value_type: str) -> list[bytes]:
    """Serialized ``feast.types.Value`` for every element (empty bytes for null/NaN), as Feast writes."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    n = len(array)
    if value_type in ("DOUBLE", "FLOAT"):
        dtype = "<f8" if value_type == "DOUBLE" else "<f4"
        data = float_column(array, dtype)
        valid = ~np.isnan(data)
        return _fixed_width(_TAG_DOUBLE if value_type == "DOUBLE" else _TAG_FLOAT, data, valid)
    if value_type in ("INT64", "INT32", "BOOL"):
        tag = {"INT64": _TAG_INT64, "INT32": _TAG_INT32, "BOOL": _TAG_BOOL}[value_type]
        tag_b = bytes((tag,))
        cache: dict[int, bytes] = {}
        out: list[bytes] = []
        for v in array.to_pylist():
            if v is None:
                out.append(b"")
                continue
            iv = int(v)
            enc = cache.get(iv)
            if enc is None:
                enc = cache[iv] = tag_b + varint(iv)
            out.append(enc)
        return out
    if value_type == "STRING":
        tag_b = bytes((_TAG_STRING,))
        out = []
        for s in array.to_pylist():
            if s is None:
                out.append(b"")
            else:
                raw = s.encode("utf-8")
                out.append(tag_b + varint(len(raw)) + raw)
        return out
    return _encode_with_feast(array, value_type, n)


def _encode_with_feast(array: pa.Array, value_type: str, n: int) -> list[bytes]:
    # Rare types (lists, sets, bytes, timestamps, maps, structs, JSON, UUIDs, decimals...) go
    # through Feast's own converter: Feast's bytes by construction.
    from feast.type_map import python_values_to_proto_values
    from feast.value_type import ValueType

    vt = ValueType[value_type]
    if "TIMESTAMP" in value_type:
        # numpy drops the zone and turns nulls into NaT; Python datetimes keep both as Feast expects.
        return [p.SerializeToString() for p in python_values_to_proto_values(_plain_values(array), vt)]
    try:
        # What Feast's materialization hands its converter (``_columns_to_proto_values``).
        protos = python_values_to_proto_values(array.to_numpy(zero_copy_only=False), vt)
    except (TypeError, ValueError):
        # Nested lists and Arrow maps arrive from numpy as arrays and key/value tuples, which
        # Feast's converter refuses; it takes the same values as plain Python objects.
        protos = python_values_to_proto_values(_plain_values(array), vt)
    if len(protos) != n:
        raise ValueError(f"Feast converted {len(protos)} of {n} values of type {value_type}")
    return [p.SerializeToString() for p in protos]


def _plain_values(array: pa.Array) -> list[Any]:
    """Python values with Arrow maps as dicts (``to_pylist`` gives key/value tuples)."""

    def plain(value: Any, dtype: pa.DataType) -> Any:
        if value is None:
            return None
        if pa.types.is_map(dtype):
            return {k: plain(v, dtype.item_type) for k, v in value}
        if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
            return [plain(v, dtype.value_type) for v in value]
        if pa.types.is_struct(dtype):
            return {f.name: plain(value[f.name], f.type) for f in dtype}
        return value

    return [plain(v, array.type) for v in array.to_pylist()]


def _varint_matrix(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Varints of non-negative integers as an (n, 10) byte matrix (left-aligned) and their lengths."""
    v = values.astype(np.uint64)
    n = v.shape[0]
    lens = np.ones(n, dtype=np.int64)
    for j in range(1, 10):
        lens += (v >> np.uint64(7 * j)) > 0
    mat = np.zeros((n, 10), dtype=np.uint8)
    for j in range(10):
        group = ((v >> np.uint64(7 * j)) & np.uint64(0x7F)).astype(np.uint8)
        mat[:, j] = np.where(j < lens - 1, group | 0x80, group)
    return mat, lens


def encode_timestamps(micros: np.ndarray) -> list[bytes]:
    """Serialized ``google.protobuf.Timestamp`` for each event time given in UTC microseconds."""
    micros = np.asarray(micros, dtype=np.int64)
    seconds = np.floor_divide(micros, 1_000_000)
    if micros.size and seconds.min() >= 1 << 28 and seconds.max() < 1 << 35:
        # Every event time from 1978 to 3058 has a 5-byte seconds varint: assemble rows in numpy.
        nanos = (micros - seconds * 1_000_000) * 1000
        sec_mat, _ = _varint_matrix(seconds)
        nano_mat, nano_lens = _varint_matrix(nanos)
        width = 12
        mat = np.zeros((micros.size, width), dtype=np.uint8)
        mat[:, 0] = 0x08
        mat[:, 1:6] = sec_mat[:, :5]
        mat[:, 6] = 0x10
        mat[:, 7:12] = nano_mat[:, :5]
        lengths = np.where(nanos == 0, 6, 7 + nano_lens).tolist()
        blob = mat.tobytes()
        return [blob[i * width : i * width + length] for i, length in enumerate(lengths)]
    out = []
    for us in micros.tolist():
        seconds, rem = divmod(us, 1_000_000)
        parts = b""
        if seconds:
            parts = b"\x08" + varint(seconds)
        if rem:
            parts += b"\x10" + varint(rem * 1000)
        out.append(parts)
    return out


def decode_timestamp_nanos(raw: bytes | None) -> int | None:
    """Event time in nanoseconds from a stored Timestamp (None when the field is absent)."""
    if raw is None:
        return None
    seconds = nanos = 0
    pos = 0
    end = len(raw)
    while pos < end:
        tag = raw[pos]
        value, pos = read_varint(raw, pos + 1)
        if tag == 0x08:
            seconds = signed64(value)
        elif tag == 0x10:
            nanos = value
        else:
            raise ValueError(f"Unexpected field tag {tag} in a stored Feast timestamp")
    return seconds * 1_000_000_000 + nanos


def decoder_for(value_type: str) -> Callable[[bytes | None], Any]:
    """A function turning a stored Value into the Python value ``get_online_features`` returns."""
    if value_type == "DOUBLE":
        unpack_d = _DOUBLE.unpack_from

        def _double(raw: bytes | None) -> Any:
            if not raw:
                return None
            if raw[0] == _TAG_DOUBLE and len(raw) == 9:
                return unpack_d(raw, 1)[0]
            return _generic(raw)

        return _double
    if value_type == "FLOAT":
        unpack_f = _FLOAT.unpack_from

        def _float(raw: bytes | None) -> Any:
            if not raw:
                return None
            if raw[0] == _TAG_FLOAT and len(raw) == 5:
                return unpack_f(raw, 1)[0]
            return _generic(raw)

        return _float
    if value_type in ("INT64", "INT32"):
        tag = _TAG_INT64 if value_type == "INT64" else _TAG_INT32

        def _int(raw: bytes | None) -> Any:
            if not raw:
                return None
            if raw[0] == tag:
                value, end = read_varint(raw, 1)
                if end == len(raw):  # else more fields follow: protobuf decides which wins
                    return signed64(value) if value_type == "INT64" else signed32(value)
            return _generic(raw)

        return _int
    if value_type == "STRING":

        def _string(raw: bytes | None) -> Any:
            if not raw:
                return None
            if raw[0] == _TAG_STRING:
                length, pos = read_varint(raw, 1)
                if pos + length == len(raw):
                    return raw[pos:].decode("utf-8")
            return _generic(raw)

        return _string
    if value_type == "BOOL":

        def _bool(raw: bytes | None) -> Any:
            if not raw:
                return None
            if raw[0] == _TAG_BOOL:
                value, end = read_varint(raw, 1)
                if end == len(raw):
                    return bool(value)
            return _generic(raw)

        return _bool
    return lambda raw: _generic(raw) if raw else None


def signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _generic(raw: bytes) -> Any:
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.type_map import feast_value_type_to_python_type

    proto = Value()
    proto.ParseFromString(raw)
    return feast_value_type_to_python_type(proto)


def resp_command(*args: bytes) -> bytes:
    """RESP encoding of an arbitrary command."""
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        parts += (b"$%d\r\n" % len(a), a, b"\r\n")
    return b"".join(parts)
