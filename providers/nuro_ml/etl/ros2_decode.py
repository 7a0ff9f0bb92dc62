"""Bulk decoding of ROS 2 (CDR-encoded) messages into Arrow columns.

The ``ros2msg`` definition is parsed into a field tree. For one message we compute its layout:
where each primitive sits (CDR aligns primitives to their size) and the value of every string
length and sequence count. Messages of the same total length whose length/count words all equal
the template's have exactly that layout, so their fields are gathered vectorised; any others are
decoded by walking them one at a time. Nested messages flatten to ``parent_child`` columns and
``builtin_interfaces/Time`` becomes a timestamp column, as in the Protobuf decoder.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

_PRIMS: dict[str, tuple[str, pa.DataType]] = {
    "bool": ("?", pa.bool_()),
    "byte": ("u1", pa.int32()),
    "char": ("i1", pa.int32()),
    "int8": ("i1", pa.int32()),
    "uint8": ("u1", pa.int32()),
    "int16": ("i2", pa.int32()),
    "uint16": ("u2", pa.int32()),
    "int32": ("i4", pa.int32()),
    "uint32": ("u4", pa.int64()),
    "int64": ("i8", pa.int64()),
    "uint64": ("u8", pa.int64()),
    "float32": ("f4", pa.float32()),
    "float64": ("f8", pa.float64()),
}
_TIME_TYPES = ("builtin_interfaces/Time", "builtin_interfaces/msg/Time")
_NP_DTYPES = {
    pa.bool_(): np.dtype(np.bool_),
    pa.int32(): np.dtype(np.int32),
    pa.int64(): np.dtype(np.int64),
    pa.float32(): np.dtype(np.float32),
    pa.float64(): np.dtype(np.float64),
}
_MAX_TEMPLATES = 32


class Ros2SchemaError(ValueError):
    """The ros2msg definition cannot be parsed."""


@dataclass(frozen=True)
class MsgField:
    ftype: str  # primitive name, "string", or a message type name
    name: str
    array: int | None  # None: scalar; -1: sequence; N: fixed array of N


def _normalize(type_name: str, package: str) -> str:
    if type_name in _PRIMS or type_name == "string":
        return type_name
    if type_name == "Header":
        return "std_msgs/Header"
    if "/" not in type_name:
        return f"{package}/{type_name}"
    parts = type_name.split("/")
    return f"{parts[0]}/{parts[-1]}"


_FIELD_RE = re.compile(r"^([A-Za-z0-9_/]+)(<=\d+)?(\[(<=)?(\d*)\])?\s+([A-Za-z0-9_]+)")


def parse_definitions(root_name: str, text: str) -> dict[str, list[MsgField]]:
    """Parse a concatenated ros2msg definition into ``{type name: fields}`` (root first)."""
    root = _normalize(root_name, "")
    blocks: list[tuple[str, list[str]]] = [(root, [])]
    for line in text.splitlines():
        if line.startswith("====="):
            continue
        if line.startswith("MSG: "):
            blocks.append((line[5:].strip(), []))
            continue
        blocks[-1][1].append(line)
    out: dict[str, list[MsgField]] = {}
    for name, lines in blocks:
        key = _normalize(name, "")
        package = key.split("/")[0]
        fields: list[MsgField] = []
        for raw in lines:
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            m = _FIELD_RE.match(line)
            if not m:
                raise Ros2SchemaError(f"cannot parse line {raw!r} of {name}")
            type_name, _, arr, bounded, size, fname = m.groups()
            rest = line[m.end() :].strip()
            if rest.startswith("=") or "=" in fname:
                continue  # constant
            if arr is None:
                array = None
            elif size and not bounded:
                array = int(size)
            else:
                array = -1
            fields.append(MsgField(_normalize(type_name, package), fname, array))
        out[key] = fields
    return out


@dataclass(frozen=True)
class Leaf:
    name: str
    path: tuple[str, ...]
    kind: str  # scalar | string | timestamp | array | binary
    prim: str
    arrow_type: pa.DataType
    #: Leaves of the element type, for ``structs`` (an array of messages).
    inner: tuple[Leaf, ...] = ()


def _leaf_value(values: dict[tuple[str, ...], Any], leaf: Leaf) -> Any:
    """The value of one leaf from a walker's values (times as microseconds)."""
    if leaf.kind == "timestamp":
        return values[(*leaf.path, "sec")] * 1_000_000 + values[(*leaf.path, "nanosec")] // 1000
    if leaf.kind == "structs":
        # Elements are walked into their own value dicts, arrays of messages inside them too.
        return [{el.name: _leaf_value(item, el) for el in leaf.inner} for item in values[leaf.path]]
    return values[leaf.path]


def _leaves(defs: dict[str, list[MsgField]], type_name: str, prefix: tuple[str, ...] = ()) -> list[Leaf]:
    out: list[Leaf] = []
    for f in defs[type_name]:
        path = (*prefix, f.name)
        name = "_".join(path)
        if f.ftype in _PRIMS:
            arrow = _PRIMS[f.ftype][1]
            if f.array is None:
                out.append(Leaf(name, path, "scalar", f.ftype, arrow))
            elif f.ftype in ("uint8", "byte"):
                out.append(Leaf(name, path, "binary", f.ftype, pa.binary()))
            else:
                out.append(Leaf(name, path, "array", f.ftype, pa.list_(arrow)))
        elif f.ftype == "string":
            if f.array is None:
                out.append(Leaf(name, path, "string", "string", pa.string()))
            else:
                out.append(Leaf(name, path, "array", "string", pa.list_(pa.string())))
        elif f.ftype in _TIME_TYPES and f.array is None:
            out.append(Leaf(name, path, "timestamp", "", pa.timestamp("us", tz="UTC")))
        else:
            if f.ftype not in defs:
                raise Ros2SchemaError(f"definition of {f.ftype} (field {name}) is missing")
            if f.array is None:
                out.extend(_leaves(defs, f.ftype, path))
            else:
                # Arrays of messages become a list of structs of the element's flattened leaves.
                inner = _leaves(defs, f.ftype)
                struct = pa.struct([pa.field(leaf.name, leaf.arrow_type) for leaf in inner])
                out.append(Leaf(name, path, "structs", f.ftype, pa.list_(struct), tuple(inner)))
    return out


@dataclass
class _Layout:
    length: int
    checks: list[tuple[int, int]] = field(default_factory=list)  # (offset, expected uint32)
    values: dict[tuple[str, ...], tuple[int, str, int]] = field(
        default_factory=dict
    )  # path -> (off, kind, n)


class _Walker:
    """Walk one CDR message, recording its layout and (optionally) its values."""

    def __init__(self, defs: dict[str, list[MsgField]], buf: Any, start: int, end: int) -> None:
        self.defs = defs
        self.buf = buf
        self.base = start + 4  # alignment origin: after the encapsulation header
        self.start = start
        self.end = end
        self.layout = _Layout(end - start)
        self.values: dict[tuple[str, ...], Any] = {}
        little = buf[start + 1] & 1
        self.endian = "<" if little else ">"

    def _align(self, pos: int, size: int) -> int:
        rel = pos - self.base
        return pos + (-rel % size)

    def _u32(self, pos: int) -> tuple[int, int]:
        pos = self._align(pos, 4)
        if pos + 4 > self.end:
            raise ValueError("length word past end of message")
        (value,) = struct.unpack_from(self.endian + "I", self.buf, pos)
        self.layout.checks.append((pos - self.start, value))
        return value, pos + 4

    def walk(self, type_name: str, pos: int, prefix: tuple[str, ...]) -> int:
        for f in self.defs[type_name]:
            path = (*prefix, f.name)
            count = 1
            if f.array == -1:
                count, pos = self._u32(pos)
            elif f.array is not None:
                count = f.array
            if f.ftype in _PRIMS:
                dtype = _PRIMS[f.ftype][0]
                size = int(dtype[1]) if dtype != "?" else 1
                if count:
                    # Elements are aligned, not the array: an empty one adds no padding (as CDR
                    # writers and readers do, upstream's and Fast-CDR).
                    pos = self._align(pos, size)
                if pos + size * count > self.end:
                    raise ValueError("field past end of message")
                kind = "scalar" if f.array is None else "array"
                self.layout.values[path] = (pos - self.start, kind + ":" + dtype, count)
                arr = np.frombuffer(
                    self.buf, dtype=self.endian + (dtype if dtype != "?" else "u1"), count=count, offset=pos
                )
                if f.array is None:
                    self.values[path] = bool(arr[0]) if dtype == "?" else arr[0].item()
                elif f.ftype in ("uint8", "byte"):
                    self.values[path] = arr.tobytes()
                else:
                    self.values[path] = arr.tolist()
                pos += size * count
            elif f.ftype == "string":
                strings = []
                for _ in range(count):
                    n, pos = self._u32(pos)
                    if pos + n > self.end:
                        raise ValueError("string past end of message")
                    if f.array is None:
                        self.layout.values[path] = (pos - self.start, "string", max(0, n - 1))
                    strings.append(bytes(self.buf[pos : pos + max(0, n - 1)]).decode("utf-8", "replace"))
                    pos += n
                self.values[path] = strings[0] if f.array is None else strings
            elif f.array is None:
                pos = self.walk(f.ftype, pos, path)
            else:
                pos = self._walk_elements(f.ftype, pos, path, count)
        return pos

    def _walk_elements(self, type_name: str, pos: int, path: tuple[str, ...], count: int) -> int:
        """Walk an array of messages; its value is one dict of element values per element."""
        outer_values, outer_layout = self.values, self.layout.values
        elements: list[dict[tuple[str, ...], Any]] = []
        try:
            for _ in range(count):
                self.values, self.layout.values = {}, {}
                pos = self.walk(type_name, pos, ())
                elements.append(self.values)
        finally:
            self.values, self.layout.values = outer_values, outer_layout
        self.values[path] = elements
        return pos


def _micros(arrow_type: pa.DataType) -> pa.DataType:
    """``arrow_type`` with timestamps as int64 microseconds (how the walker returns them)."""
    if pa.types.is_timestamp(arrow_type):
        return pa.int64()
    if pa.types.is_list(arrow_type):
        return pa.list_(_micros(arrow_type.value_type))
    if pa.types.is_struct(arrow_type):
        return pa.struct([pa.field(f.name, _micros(f.type)) for f in arrow_type])
    return arrow_type


def _gather(arr: np.ndarray, pos: np.ndarray, width: int) -> np.ndarray:
    return arr[pos[:, None] + np.arange(width)]


class Ros2Decoder:
    """Decode CDR messages of one ``ros2msg`` schema into columns."""

    def __init__(self, schema_name: str, schema_text: str) -> None:
        self.defs = parse_definitions(schema_name, schema_text)
        self.root = _normalize(schema_name, "")
        self.leaves = _leaves(self.defs, self.root)
        self.schema = pa.schema([pa.field(leaf.name, leaf.arrow_type) for leaf in self.leaves])

    def _walk(self, buf: Any, start: int, end: int) -> _Walker:
        w = _Walker(self.defs, buf, start, end)
        w.walk(self.root, start + 4, ())
        return w

    def decode(
        self, buf: Any, starts: np.ndarray, ends: np.ndarray, columns: Sequence[str] | None = None
    ) -> pa.Table:
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
        # String arrays have no fixed offsets to gather from; such schemas take the walking path.
        templated = not any(
            (leaf.kind == "array" and leaf.prim == "string") or leaf.kind == "structs" for leaf in leaves
        )
        for _ in range(_MAX_TEMPLATES if templated else 0):
            if remaining.shape[0] == 0:
                break
            first = int(remaining[0])
            try:
                walker = self._walk(buf, int(starts[first]), int(ends[first]))
            except (ValueError, struct.error) as err:
                raise ValueError(f"CDR message does not match {self.root}: {err}") from err
            layout = walker.layout
            cand = remaining[lengths[remaining] == layout.length]
            head = bytes(buf[int(starts[first]) : int(starts[first]) + 4])
            ok = np.ones(cand.shape[0], dtype=bool)
            for j, b in enumerate(head):
                ok &= arr[starts[cand] + j] == b
            for off, value in layout.checks:
                words = _gather(arr, starts[cand] + off, 4).view(walker.endian + "u4").ravel()
                ok &= words == value
            members = cand[ok]
            if members.shape[0] < 2 and remaining.shape[0] > 1:
                break
            parts.append((members, self._gather_layout(arr, starts[members], walker, leaves)))
            remaining = np.setdiff1d(remaining, members, assume_unique=True)
        if remaining.shape[0]:
            parts.append((remaining, self._decode_slow(buf, starts[remaining], ends[remaining], leaves)))
        if len(parts) == 1:
            return pa.table(parts[0][1])
        order = np.argsort(np.concatenate([idx for idx, _ in parts]), kind="stable")
        return pa.concat_tables([pa.table(cols) for _, cols in parts]).take(pa.array(order))

    def _gather_layout(
        self, arr: np.ndarray, starts: np.ndarray, walker: _Walker, leaves: list[Leaf]
    ) -> dict[str, pa.Array]:
        n = int(starts.shape[0])
        endian = walker.endian
        values = walker.layout.values
        out: dict[str, pa.Array] = {}
        for leaf in leaves:
            if leaf.kind == "timestamp":
                sec_off, _, _ = values[(*leaf.path, "sec")]
                ns_off, _, _ = values[(*leaf.path, "nanosec")]
                sec = _gather(arr, starts + sec_off, 4).view(endian + "i4").ravel().astype(np.int64)
                nsec = _gather(arr, starts + ns_off, 4).view(endian + "u4").ravel().astype(np.int64)
                out[leaf.name] = pa.array(sec * 1_000_000 + nsec // 1000).cast(leaf.arrow_type)
                continue
            off, kind, count = values[leaf.path]
            if kind == "string":
                matrix = _gather(arr, starts + off, count)
                offsets = (np.arange(n + 1) * count).astype(np.int32)
                out[leaf.name] = pa.Array.from_buffers(
                    pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(matrix.tobytes())]
                )
                continue
            dtype = kind.split(":", 1)[1]
            np_dtype = np.dtype(endian + (dtype if dtype != "?" else "u1"))
            flat = _gather(arr, starts + off, np_dtype.itemsize * count).view(np_dtype)
            if leaf.kind == "scalar":
                vals = flat.ravel()
                out[leaf.name] = pa.array(
                    vals != 0 if dtype == "?" else vals.astype(_NP_DTYPES[leaf.arrow_type])
                )
            elif leaf.kind == "binary":
                offsets = (np.arange(n + 1) * count).astype(np.int32)
                out[leaf.name] = pa.Array.from_buffers(
                    pa.binary(),
                    n,
                    [None, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(flat).tobytes())],
                )
            else:
                value_type = leaf.arrow_type.value_type
                offsets = pa.array((np.arange(n + 1) * count).astype(np.int32))
                raw = flat.ravel()
                vals = raw != 0 if dtype == "?" else raw.astype(_NP_DTYPES[value_type])
                out[leaf.name] = pa.ListArray.from_arrays(offsets, pa.array(vals))
        return out

    def _decode_slow(
        self, buf: Any, starts: np.ndarray, ends: np.ndarray, leaves: list[Leaf]
    ) -> dict[str, pa.Array]:
        cols: dict[str, list[Any]] = {leaf.name: [] for leaf in leaves}
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            try:
                values = self._walk(buf, s, e).values
            except (ValueError, struct.error) as err:
                raise ValueError(f"CDR message does not match {self.root}: {err}") from err
            for leaf in leaves:
                cols[leaf.name].append(_leaf_value(values, leaf))
        out: dict[str, pa.Array] = {}
        for leaf in leaves:
            if leaf.kind == "timestamp":
                out[leaf.name] = pa.array(cols[leaf.name], pa.int64()).cast(leaf.arrow_type)
            elif leaf.kind == "structs":
                out[leaf.name] = pa.array(cols[leaf.name], _micros(leaf.arrow_type)).cast(leaf.arrow_type)
            else:
                out[leaf.name] = pa.array(cols[leaf.name], leaf.arrow_type)
        return out
