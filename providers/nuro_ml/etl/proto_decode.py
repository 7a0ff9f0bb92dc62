"""Bulk Protobuf decoding of many messages of one schema into Arrow columns.

Messages of a topic almost always carry the same *sequence* of fields: the same tags in the same
order, with the same number of elements in repeated message fields. Their byte layouts still
differ (varints take 1 to 10 bytes; strings, bytes and packed arrays vary in length, so every
later field moves). We derive the field sequence ("program") once from one message, then apply
it to all candidate messages at once with numpy, in one of two ways:

* by layouts: the exact byte layout of a message (where its tags, length prefixes and varint
  continuation bits are, and their values) is derived with a scalar walk; every message whose
  structural bytes equal a layout's is recognised by one vectorised comparison and has its values
  at the layout's offsets. Used while the messages of a group have few layouts.
* step by step: each step checks the tag bytes of every message, decodes varints of any width
  and length prefixes, and advances a per-message position; nested messages must end exactly at
  their length prefix and the message exactly at its end.

Either way, a message that passes is parsed exactly as a sequential parser parses it, so its
values can be gathered vectorised. Messages that fail form the next group (with a program derived
from the first of them); whatever fits no group (packed varints, maps, groups, fields repeated out
of place, malformed data) is parsed one by one with the upb runtime, which is also the reference
the vectorised path is tested against. Programs and layouts are kept between calls, as chunks of
a topic repeat them.

Strings, bytes and packed arrays are gathered from the buffer with one copy into the Arrow data
buffer; numeric columns are built from numpy arrays without Python objects per message.

The pieces: :mod:`~nuro_ml.etl.proto_schema` (schema -> columns), :mod:`~nuro_ml.etl.proto_program`
(programs and layouts), :mod:`~nuro_ml.etl.proto_execute` (running them vectorised, Arrow
assembly); this module holds :class:`ProtobufDecoder`, which tries programs in turn and leaves the
rest to upb.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from nuro_ml.etl.proto_execute import Piece, assemble, combine, run_program, to_arrow
from nuro_ml.etl.proto_program import Deriver, Program
from nuro_ml.etl.proto_schema import UNSIGNED64, Leaf, leaves, message_descriptor, signed64
from nuro_ml.etl.wire_reads import WireReads

#: Programs tried per decode call, messages in a row no program could be derived from, and
#: messages run through programs (per message decoded, plus a constant) before the rest goes to
#: upb one by one.
_MAX_TEMPLATES = 32
_MAX_FAILURES = 4
_WORK_PER_MESSAGE = 16
_WORK_MIN = 256
#: Programs kept per column set, most recently matched first.
_MAX_CACHED = 6


@dataclass
class _Plan:
    """Columns of one decode request, and the programs that recently matched its messages."""

    leaves: list[Leaf]
    by_path: dict[tuple[str, ...], Leaf]
    programs: list[Program] = field(default_factory=list)

    def remember(self, program: Program) -> None:
        if self.programs and self.programs[0] is program:
            return
        if program in self.programs:
            self.programs.remove(program)
        self.programs.insert(0, program)
        del self.programs[_MAX_CACHED:]


class ProtobufDecoder:
    """Decode messages of one Protobuf schema (a serialized ``FileDescriptorSet``) into columns."""

    def __init__(self, schema_name: str, schema_data: bytes) -> None:
        self.descriptor = message_descriptor(schema_name, schema_data)
        self.message_class = message_factory.GetMessageClass(self.descriptor)
        self.leaves = leaves(self.descriptor)
        self.schema = pa.schema([pa.field(leaf.name, leaf.arrow_type) for leaf in self.leaves])
        self._fields: dict[str, dict[int, FieldDescriptor]] = {}
        self._plans: dict[tuple[str, ...] | None, _Plan] = {}

    def _fields_of(self, desc: Descriptor) -> dict[int, FieldDescriptor]:
        found = self._fields.get(desc.full_name)
        if found is None:
            found = {fd.number: fd for fd in desc.fields}
            self._fields[desc.full_name] = found
        return found

    def _plan(self, columns: Sequence[str] | None) -> _Plan:
        key = None if columns is None else tuple(sorted(set(columns)))
        plan = self._plans.get(key)
        if plan is None:
            leaves = [leaf for leaf in self.leaves if key is None or leaf.name in key]
            plan = _Plan(leaves, {leaf.path: leaf for leaf in leaves})
            self._plans[key] = plan
        return plan

    def decode(
        self, buf: Any, starts: np.ndarray, ends: np.ndarray, columns: Sequence[str] | None = None
    ) -> pa.Table:
        """Decode payloads ``buf[starts[i]:ends[i]]`` into a table of the requested columns, in order."""
        plan = self._plan(columns)
        leaves = plan.leaves
        n = int(starts.shape[0])
        if n == 0:
            return pa.table({leaf.name: pa.array([], leaf.arrow_type) for leaf in leaves})
        starts = np.asarray(starts, dtype=np.int64)
        ends = np.asarray(ends, dtype=np.int64)
        wire = WireReads(buf, int(ends.max()))
        remaining = np.arange(n)
        parts: list[tuple[np.ndarray, dict[str, Piece]]] = []
        slow: list[int] = []
        failures = attempts = work = 0
        # Programs of earlier calls first: a topic's layouts repeat from chunk to chunk.
        cached = list(plan.programs)
        while (
            remaining.shape[0]
            and attempts < _MAX_TEMPLATES
            and failures < _MAX_FAILURES
            and work < _WORK_PER_MESSAGE * n + _WORK_MIN
        ):
            attempts += 1
            first = int(remaining[0])
            if cached:
                program: Program | None = cached.pop(0)
            else:
                program = Deriver(buf, plan.by_path, self._fields_of).derive(
                    int(starts[first]), int(ends[first]), self.descriptor
                )
                if program is None:
                    slow.append(first)
                    remaining = remaining[1:]
                    failures += 1
                    continue
            assert program is not None
            whole = remaining.shape[0] == n
            work += remaining.shape[0]
            ok, run = run_program(
                wire, program, starts if whole else starts[remaining], ends if whole else ends[remaining]
            )
            if not ok.any():
                if program not in plan.programs:
                    # Only a string that is not valid UTF-8 fails the program of its own message.
                    slow.append(first)
                    remaining = remaining[1:]
                    failures += 1
                continue
            plan.remember(program)
            failures = 0
            members = remaining[ok]
            parts.append((members, assemble(wire, program, run, ok, leaves)))
            remaining = remaining[~ok]
        if slow or remaining.shape[0]:
            idx = np.sort(np.concatenate([np.asarray(slow, dtype=np.int64), remaining]))
            parts.append((idx, self._decode_slow(buf, starts[idx], ends[idx], leaves)))
        out: dict[str, pa.Array] = {}
        for leaf in leaves:
            if len(parts) == 1:
                piece = parts[0][1][leaf.name]
            else:
                piece = combine(
                    wire,
                    [cols[leaf.name] for _, cols in parts],
                    [idx for idx, _ in parts],
                    n,
                    leaf.arrow_type,
                )
            out[leaf.name] = to_arrow(wire, piece, n, leaf.arrow_type)
        return pa.table(out)

    def _decode_slow(
        self, buf: Any, starts: np.ndarray, ends: np.ndarray, leaves: list[Leaf]
    ) -> dict[str, Piece]:
        values: dict[str, list[Any]] = {leaf.name: [] for leaf in leaves}
        cls = self.message_class
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            msg = cls.FromString(bytes(buf[s:e]))
            for leaf in leaves:
                values[leaf.name].append(_value(msg, leaf))
        out: dict[str, Piece] = {}
        for leaf in leaves:
            out[leaf.name] = ("arrow", pa.array(values[leaf.name], leaf.arrow_type))
        return out


def _value(msg: Any, leaf: Leaf) -> Any:
    """A leaf's value in a parsed message, in the column's Arrow form."""
    obj: Any = msg
    for name in leaf.path:
        obj = getattr(obj, name)
    if leaf.kind == "repeated_message":
        return [{sub.name: _value(item, sub) for sub in leaf.sub_fields} for item in obj]
    if leaf.raw_message:
        if leaf.kind == "repeated_scalar":
            return [item.SerializeToString() for item in obj]
        return obj.SerializeToString()
    if leaf.kind == "timestamp":
        return obj.seconds * 1_000_000 + obj.nanos // 1000
    if leaf.kind == "repeated_scalar":
        return [signed64(v) for v in obj] if leaf.ftype in UNSIGNED64 else list(obj)
    if leaf.kind == "scalar" and leaf.ftype in UNSIGNED64:
        return signed64(obj)
    return obj
