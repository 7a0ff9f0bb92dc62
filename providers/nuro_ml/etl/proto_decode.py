"""Bulk Protobuf decoding of many messages of one schema into Arrow columns.

Messages of a topic almost always share one wire layout: the same fields present, in the same
order, with varints and strings of the same byte lengths. We derive that layout ("template") once
from one message, then check *every* structural byte of every candidate message against it with
numpy (tags, length prefixes, varint continuation bits, total length). A message that passes has
exactly the template's layout, so its values can be gathered at fixed offsets, vectorised. Messages
that fit no template are parsed one by one with the upb runtime. Both paths give the same values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor

_TIMESTAMP = "google.protobuf.Timestamp"
_MAX_DEPTH = 6
_MAX_TEMPLATES = 32

FD = FieldDescriptor
_SCALAR_ARROW: dict[int, pa.DataType] = {
    FD.TYPE_DOUBLE: pa.float64(),
    FD.TYPE_FLOAT: pa.float32(),
    FD.TYPE_INT32: pa.int32(),
    FD.TYPE_SINT32: pa.int32(),
    FD.TYPE_SFIXED32: pa.int32(),
    FD.TYPE_ENUM: pa.int32(),
    FD.TYPE_INT64: pa.int64(),
    FD.TYPE_SINT64: pa.int64(),
    FD.TYPE_SFIXED64: pa.int64(),
    FD.TYPE_UINT32: pa.int64(),
    FD.TYPE_FIXED32: pa.int64(),
    FD.TYPE_UINT64: pa.int64(),
    FD.TYPE_FIXED64: pa.int64(),
    FD.TYPE_BOOL: pa.bool_(),
    FD.TYPE_STRING: pa.string(),
    FD.TYPE_BYTES: pa.binary(),
}
_FIXED: dict[int, tuple[int, str]] = {
    FD.TYPE_DOUBLE: (8, "<f8"),
    FD.TYPE_FIXED64: (8, "<i8"),
    FD.TYPE_SFIXED64: (8, "<i8"),
    FD.TYPE_FLOAT: (4, "<f4"),
    FD.TYPE_FIXED32: (4, "<u4"),
    FD.TYPE_SFIXED32: (4, "<i4"),
}
_VARINT_TYPES = {
    FD.TYPE_INT32,
    FD.TYPE_INT64,
    FD.TYPE_UINT32,
    FD.TYPE_UINT64,
    FD.TYPE_SINT32,
    FD.TYPE_SINT64,
    FD.TYPE_BOOL,
    FD.TYPE_ENUM,
}


@dataclass(frozen=True)
class Leaf:
    """One output column: a path of field names from the root message."""

    name: str
    path: tuple[str, ...]
    kind: str  # scalar | timestamp | repeated_scalar | repeated_message
    ftype: int
    arrow_type: pa.DataType
    sub_fields: tuple[tuple[str, int], ...] = ()


def _leaves(desc: Descriptor, prefix: tuple[str, ...] = (), depth: int = 0) -> list[Leaf]:
    out: list[Leaf] = []
    for fd in desc.fields:
        path = (*prefix, fd.name)
        name = "_".join(path)
        repeated = fd.is_repeated
        if fd.type == FD.TYPE_MESSAGE:
            sub = fd.message_type
            if repeated:
                scalars = tuple(
                    (f.name, f.type) for f in sub.fields if f.type in _SCALAR_ARROW and not f.is_repeated
                )
                struct = pa.struct([pa.field(n, _SCALAR_ARROW[t]) for n, t in scalars])
                out.append(Leaf(name, path, "repeated_message", fd.type, pa.list_(struct), scalars))
            elif sub.full_name == _TIMESTAMP:
                out.append(Leaf(name, path, "timestamp", fd.type, pa.timestamp("us", tz="UTC")))
            elif depth < _MAX_DEPTH:
                out.extend(_leaves(sub, path, depth + 1))
        elif fd.type in _SCALAR_ARROW:
            if repeated:
                out.append(Leaf(name, path, "repeated_scalar", fd.type, pa.list_(_SCALAR_ARROW[fd.type])))
            else:
                out.append(Leaf(name, path, "scalar", fd.type, _SCALAR_ARROW[fd.type]))
    return out


_NP_DTYPES: dict[pa.DataType, np.dtype[Any]] = {
    pa.float64(): np.dtype(np.float64),
    pa.float32(): np.dtype(np.float32),
    pa.int32(): np.dtype(np.int32),
    pa.int64(): np.dtype(np.int64),
    pa.bool_(): np.dtype(np.bool_),
}


def _read_varint(buf: Any, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    start = pos
    while True:
        if pos >= end or pos - start >= 10:
            raise ValueError("bad varint")
        b = buf[pos]
        value |= (b & 0x7F) << shift
        pos += 1
        if not b & 0x80:
            return value, pos - start
        shift += 7


@dataclass
class _Template:
    length: int
    checks: list[tuple[int, bytes]] = field(default_factory=list)
    varints: list[tuple[int, int]] = field(default_factory=list)
    # (path, offset, kind, size): kind in fixed:<dtype> | varint | bytes | packed:<dtype> | ts_sec | ts_nanos
    values: list[tuple[tuple[str, ...], int, str, int]] = field(default_factory=list)


def _derive(buf: Any, start: int, end: int, desc: Descriptor) -> _Template | None:
    tpl = _Template(length=end - start)

    def walk(pos: int, stop: int, d: Descriptor, path: tuple[str, ...], ts: bool) -> bool:
        seen: set[int] = set()
        while pos < stop:
            tag, tlen = _read_varint(buf, pos, stop)
            tpl.checks.append((pos - start, bytes(buf[pos : pos + tlen])))
            pos += tlen
            num, wt = tag >> 3, tag & 7
            fd = d.fields_by_number.get(num)
            if fd is None or num in seen:
                return False
            seen.add(num)
            key = (*path, fd.name)
            if wt == 0:
                if fd.type not in _VARINT_TYPES or fd.is_repeated:
                    return False
                _, vlen = _read_varint(buf, pos, stop)
                tpl.varints.append((pos - start, vlen))
                kind = ("ts_sec" if num == 1 else "ts_nanos") if ts else "varint"
                tpl.values.append((path if ts else key, pos - start, kind, vlen))
                pos += vlen
            elif wt in (1, 5):
                size, dtype = _FIXED.get(fd.type, (0, ""))
                if not size or (8 if wt == 1 else 4) != size or fd.is_repeated:
                    return False
                tpl.values.append((key, pos - start, "fixed:" + dtype, size))
                pos += size
            elif wt == 2:
                ln, llen = _read_varint(buf, pos, stop)
                tpl.checks.append((pos - start, bytes(buf[pos : pos + llen])))
                pos += llen
                if pos + ln > stop:
                    return False
                if fd.is_repeated:
                    if fd.type not in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
                        return False
                    size, dtype = _FIXED[fd.type]
                    tpl.values.append((key, pos - start, "packed:" + dtype, ln // size))
                elif fd.type == FD.TYPE_MESSAGE:
                    sub = fd.message_type
                    is_ts = sub.full_name == _TIMESTAMP
                    if not walk(pos, pos + ln, sub, key, is_ts):
                        return False
                elif fd.type in (FD.TYPE_STRING, FD.TYPE_BYTES):
                    tpl.values.append((key, pos - start, "bytes", ln))
                else:
                    return False
                pos += ln
            else:
                return False
        return pos == stop

    try:
        return tpl if walk(start, end, desc, (), False) else None
    except ValueError:
        return None


def _gather(arr: np.ndarray, pos: np.ndarray, width: int) -> np.ndarray:
    return arr[pos[:, None] + np.arange(width)]


def _varint_values(arr: np.ndarray, pos: np.ndarray, width: int) -> np.ndarray:
    out = np.zeros(pos.shape[0], dtype=np.uint64)
    for j in range(width):
        out |= (arr[pos + j] & 0x7F).astype(np.uint64) << np.uint64(7 * j)
    return out


def _binary_array(matrix: np.ndarray, arrow_type: pa.DataType) -> pa.Array:
    n, width = matrix.shape
    offsets = (np.arange(n + 1, dtype=np.int32) * width).astype(np.int32)
    data = np.ascontiguousarray(matrix).tobytes()
    return pa.Array.from_buffers(arrow_type, n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _default_array(leaf: Leaf, n: int) -> pa.Array:
    if leaf.kind in ("repeated_scalar", "repeated_message"):
        return pa.ListArray.from_arrays(
            pa.array(np.zeros(n + 1, dtype=np.int32)), pa.array([], leaf.arrow_type.value_type)
        )
    if leaf.arrow_type == pa.string():
        return pa.array([""] * n, pa.string())
    if leaf.arrow_type == pa.binary():
        return pa.array([b""] * n, pa.binary())
    if leaf.kind == "timestamp":
        return pa.array(np.zeros(n, dtype=np.int64)).cast(pa.timestamp("us", tz="UTC"))
    return pa.array(np.zeros(n, dtype=_NP_DTYPES[leaf.arrow_type]), leaf.arrow_type)


def _convert_varint(values: np.ndarray, ftype: int) -> np.ndarray:
    if ftype in (FD.TYPE_SINT32, FD.TYPE_SINT64):
        v = values.astype(np.int64)
        return (values >> np.uint64(1)).astype(np.int64) ^ -(v & 1)
    if ftype == FD.TYPE_BOOL:
        return values != 0
    return values.view(np.int64)


class ProtobufDecoder:
    """Decode messages of one Protobuf schema (a serialized ``FileDescriptorSet``) into columns."""

    def __init__(self, schema_name: str, schema_data: bytes) -> None:
        fds = descriptor_pb2.FileDescriptorSet.FromString(schema_data)
        pool = descriptor_pool.DescriptorPool()
        by_name = {fd.name: fd for fd in fds.file}
        added: set[str] = set()

        def add(fdp: descriptor_pb2.FileDescriptorProto) -> None:
            for dep in fdp.dependency:
                if dep in by_name and dep not in added:
                    add(by_name[dep])
            if fdp.name not in added:
                added.add(fdp.name)
                pool.Add(fdp)

        for fdp in fds.file:
            add(fdp)
        self.descriptor = pool.FindMessageTypeByName(schema_name)
        self.message_class = message_factory.GetMessageClass(self.descriptor)
        self.leaves = _leaves(self.descriptor)
        self.schema = pa.schema([pa.field(leaf.name, leaf.arrow_type) for leaf in self.leaves])

    def decode(
        self, buf: Any, starts: np.ndarray, ends: np.ndarray, columns: Sequence[str] | None = None
    ) -> pa.Table:
        """Decode payloads ``buf[starts[i]:ends[i]]`` into a table of the requested columns, in order."""
        leaves = (
            self.leaves if columns is None else [leaf for leaf in self.leaves if leaf.name in set(columns)]
        )
        n = int(starts.shape[0])
        if n == 0:
            return pa.table({leaf.name: pa.array([], leaf.arrow_type) for leaf in leaves})
        arr = np.frombuffer(buf, dtype=np.uint8)
        lengths = ends - starts
        remaining = np.arange(n)
        parts: list[tuple[np.ndarray, dict[str, pa.Array]]] = []
        for _ in range(_MAX_TEMPLATES):
            if remaining.shape[0] == 0:
                break
            first = int(remaining[0])
            tpl = _derive(buf, int(starts[first]), int(ends[first]), self.descriptor)
            if tpl is None:
                break
            cand = remaining[lengths[remaining] == tpl.length]
            ok = self._verify(arr, starts[cand], tpl)
            members = cand[ok]
            if members.shape[0] < 2 and remaining.shape[0] > 1:
                break
            parts.append((members, self._gather_template(arr, starts[members], tpl, leaves)))
            remaining = np.setdiff1d(remaining, members, assume_unique=True)
        if remaining.shape[0]:
            parts.append((remaining, self._decode_slow(buf, starts[remaining], ends[remaining], leaves)))
        if len(parts) == 1:
            return pa.table(parts[0][1])
        order = np.argsort(np.concatenate([idx for idx, _ in parts]), kind="stable")
        table = pa.concat_tables([pa.table(cols) for _, cols in parts])
        return table.take(pa.array(order))

    @staticmethod
    def _verify(arr: np.ndarray, starts: np.ndarray, tpl: _Template) -> np.ndarray:
        ok = np.ones(starts.shape[0], dtype=bool)
        for off, expected in tpl.checks:
            for j, b in enumerate(expected):
                ok &= arr[starts + off + j] == b
        for off, width in tpl.varints:
            for j in range(width - 1):
                ok &= (arr[starts + off + j] & 0x80) != 0
            ok &= (arr[starts + off + width - 1] & 0x80) == 0
        return ok

    def _gather_template(
        self, arr: np.ndarray, starts: np.ndarray, tpl: _Template, leaves: list[Leaf]
    ) -> dict[str, pa.Array]:
        n = int(starts.shape[0])
        by_path: dict[tuple[str, ...], list[tuple[int, str, int]]] = {}
        for path, off, kind, size in tpl.values:
            by_path.setdefault(path, []).append((off, kind, size))
        out: dict[str, pa.Array] = {}
        for leaf in leaves:
            found = by_path.get(leaf.path)
            if not found:
                out[leaf.name] = _default_array(leaf, n)
                continue
            if leaf.kind == "timestamp":
                sec = np.zeros(n, dtype=np.int64)
                nanos = np.zeros(n, dtype=np.int64)
                for off, kind, size in found:
                    vals = _varint_values(arr, starts + off, size).view(np.int64)
                    if kind == "ts_sec":
                        sec = vals
                    else:
                        nanos = vals
                out[leaf.name] = pa.array(sec * 1_000_000 + nanos // 1000).cast(pa.timestamp("us", tz="UTC"))
                continue
            off, kind, size = found[0]
            if kind.startswith("fixed:"):
                dtype = np.dtype(kind[6:])
                vals = _gather(arr, starts + off, size).view(dtype).ravel()
                out[leaf.name] = pa.array(vals.astype(_NP_DTYPES[leaf.arrow_type], copy=False))
            elif kind == "varint":
                vals = _convert_varint(_varint_values(arr, starts + off, size), leaf.ftype)
                out[leaf.name] = pa.array(vals.astype(_NP_DTYPES[leaf.arrow_type], copy=False))
            elif kind == "bytes":
                out[leaf.name] = _binary_array(_gather(arr, starts + off, size), leaf.arrow_type)
            elif kind.startswith("packed:"):
                dtype = np.dtype(kind[7:])
                flat = _gather(arr, starts + off, size * dtype.itemsize).view(dtype).ravel()
                value_type = leaf.arrow_type.value_type
                offsets = pa.array((np.arange(n + 1) * size).astype(np.int32))
                out[leaf.name] = pa.ListArray.from_arrays(
                    offsets, pa.array(flat.astype(_NP_DTYPES[value_type]))
                )
        return out

    def _decode_slow(
        self, buf: Any, starts: np.ndarray, ends: np.ndarray, leaves: list[Leaf]
    ) -> dict[str, pa.Array]:
        values: dict[str, list[Any]] = {leaf.name: [] for leaf in leaves}
        cls = self.message_class
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            msg = cls.FromString(bytes(buf[s:e]))
            for leaf in leaves:
                obj: Any = msg
                for name in leaf.path:
                    obj = getattr(obj, name)
                if leaf.kind == "timestamp":
                    obj = obj.seconds * 1_000_000 + obj.nanos // 1000
                elif leaf.kind == "repeated_scalar":
                    obj = list(obj)
                elif leaf.kind == "repeated_message":
                    obj = [{n: getattr(item, n) for n, _ in leaf.sub_fields} for item in obj]
                values[leaf.name].append(obj)
        out: dict[str, pa.Array] = {}
        for leaf in leaves:
            if leaf.kind == "timestamp":
                out[leaf.name] = pa.array(values[leaf.name], pa.int64()).cast(leaf.arrow_type)
            else:
                out[leaf.name] = pa.array(values[leaf.name], leaf.arrow_type)
        return out
