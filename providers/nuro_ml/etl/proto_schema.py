"""Protobuf schema -> Arrow columns: which columns a message type gives and of which types.

Singular nested messages are flattened into columns named by their field path joined with ``_``
(``pose.position.x`` -> ``pose_position_x``); ``google.protobuf.Timestamp`` becomes a UTC
timestamp column; repeated scalars become list columns; repeated messages become
``list<struct>`` columns whose struct fields are the element's scalar fields, timestamps and
singular nested messages, flattened the same way (``transforms[].translation.x`` ->
``transforms[].translation_x``), and its own repeated fields, as list fields of the struct
(``list<struct<..., values: list<double>, parts: list<struct<...>>>>``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pyarrow as pa
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import Descriptor, FieldDescriptor

TIMESTAMP = "google.protobuf.Timestamp"
#: Nesting of messages decoded into columns and struct fields. A message field at this depth (a
#: recursive type, or an unusually deep one) is kept whole: a binary column of the field's
#: serialized message (a list of them if repeated), named by its path like any other column.
MAX_DEPTH = 6

FD = FieldDescriptor
SCALAR_ARROW: dict[int, pa.DataType] = {
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
#: Fixed-width types: (wire size, numpy dtype of the wire bytes).
FIXED: dict[int, tuple[int, str]] = {
    FD.TYPE_DOUBLE: (8, "<f8"),
    FD.TYPE_FIXED64: (8, "<i8"),
    FD.TYPE_SFIXED64: (8, "<i8"),
    FD.TYPE_FLOAT: (4, "<f4"),
    FD.TYPE_FIXED32: (4, "<u4"),
    FD.TYPE_SFIXED32: (4, "<i4"),
}
VARINT_TYPES = {
    FD.TYPE_INT32,
    FD.TYPE_INT64,
    FD.TYPE_UINT32,
    FD.TYPE_UINT64,
    FD.TYPE_SINT32,
    FD.TYPE_SINT64,
    FD.TYPE_BOOL,
    FD.TYPE_ENUM,
}
#: The wire type each scalar type is written with (unpacked).
WIRE_OF: dict[int, int] = {t: 0 for t in VARINT_TYPES}
WIRE_OF.update({t: 1 if size == 8 else 5 for t, (size, _) in FIXED.items()})
WIRE_OF.update({FD.TYPE_STRING: 2, FD.TYPE_BYTES: 2})
NP_DTYPES: dict[pa.DataType, np.dtype[Any]] = {
    pa.float64(): np.dtype(np.float64),
    pa.float32(): np.dtype(np.float32),
    pa.int32(): np.dtype(np.int32),
    pa.int64(): np.dtype(np.int64),
    pa.bool_(): np.dtype(np.bool_),
    pa.timestamp("us", tz="UTC"): np.dtype(np.int64),
}
#: Unsigned 64-bit types, whose columns are int64 with the same bits.
UNSIGNED64 = {FD.TYPE_UINT64, FD.TYPE_FIXED64}
TIMESTAMP_ARROW = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class Leaf:
    """One output column: a path of field names from the root message.

    ``default`` is the value of an absent scalar field; ``sub_fields`` are the struct fields of the
    elements of a ``repeated_message`` column, leaves of any kind whose path starts at the element.
    """

    name: str
    path: tuple[str, ...]
    kind: str  # scalar | timestamp | repeated_scalar | repeated_message
    ftype: int
    arrow_type: pa.DataType
    sub_fields: tuple[Leaf, ...] = ()
    default: Any = None
    #: A message field past :data:`MAX_DEPTH`, kept as its serialized bytes.
    raw_message: bool = False

    @cached_property
    def sub_by_path(self) -> dict[tuple[str, ...], Leaf]:
        """The struct fields of a ``repeated_message`` column by their path in the element."""
        return {sub.path: sub for sub in self.sub_fields}

    @cached_property
    def sub_prefixes(self) -> frozenset[tuple[str, ...]]:
        """Paths of the nested messages of an element that hold struct fields."""
        return frozenset(sub.path[:k] for sub in self.sub_fields for k in range(1, len(sub.path)))


def leaves(desc: Descriptor) -> list[Leaf]:
    """The columns of messages of type ``desc``, in field order."""
    return _leaves(desc, (), 0)


def _leaves(desc: Descriptor, prefix: tuple[str, ...], depth: int) -> list[Leaf]:
    out: list[Leaf] = []
    for fd in desc.fields:
        path = (*prefix, fd.name)
        name = "_".join(path)
        repeated = fd.is_repeated
        if fd.type == FD.TYPE_MESSAGE:
            sub = fd.message_type
            if sub.full_name == TIMESTAMP and not repeated:
                out.append(Leaf(name, path, "timestamp", fd.type, TIMESTAMP_ARROW, default=0))
            elif depth >= MAX_DEPTH:
                # On the wire a message is a length-delimited field, as bytes are: decoded as bytes.
                kind, arrow = (
                    ("repeated_scalar", pa.list_(pa.binary())) if repeated else ("scalar", pa.binary())
                )
                out.append(Leaf(name, path, kind, FD.TYPE_BYTES, arrow, default=b"", raw_message=True))
            elif repeated:
                fields = tuple(_leaves(sub, (), depth + 1))
                struct = pa.struct([pa.field(f.name, f.arrow_type) for f in fields])
                out.append(Leaf(name, path, "repeated_message", fd.type, pa.list_(struct), fields))
            else:
                out.extend(_leaves(sub, path, depth + 1))
        elif fd.type in SCALAR_ARROW:
            if repeated:
                out.append(Leaf(name, path, "repeated_scalar", fd.type, pa.list_(SCALAR_ARROW[fd.type])))
            else:
                out.append(
                    Leaf(name, path, "scalar", fd.type, SCALAR_ARROW[fd.type], default=fd.default_value)
                )
    return out


def signed64(value: int) -> int:
    """A uint64 value as the int64 with the same bits (the column type of uint64 fields)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def message_descriptor(schema_name: str, schema_data: bytes) -> Descriptor:
    """The descriptor of ``schema_name`` in a serialized ``FileDescriptorSet`` (MCAP ``protobuf`` schema)."""
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
    return pool.FindMessageTypeByName(schema_name)
