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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from nuro_ml.etl.wire_reads import MAX_LEN, TAG_MASK, U64, WireReads, compact

_TIMESTAMP = "google.protobuf.Timestamp"
_MAX_DEPTH = 6
#: Programs tried per decode call, messages in a row no program could be derived from, and
#: messages run through programs (per message decoded, plus a constant) before the rest goes to
#: upb one by one.
_MAX_TEMPLATES = 32
_MAX_FAILURES = 4
_WORK_PER_MESSAGE = 16
_WORK_MIN = 256
#: Nesting beyond this is left to the per-message parser (upb's own limit is 100).
_MAX_NESTING = 32
#: Programs kept per column set, most recently matched first.
_MAX_CACHED = 6
#: Layouts kept per program, layouts derived per call before a program runs step by step instead.
_MAX_LAYOUTS = 16
_NEW_LAYOUTS = 6
#: A program whose messages had too many layouts runs step by step for this many uses.
_LAYOUT_RETRY = 16

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
#: Fixed-width types: (wire size, numpy dtype of the wire bytes).
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
_NP_DTYPES: dict[pa.DataType, np.dtype[Any]] = {
    pa.float64(): np.dtype(np.float64),
    pa.float32(): np.dtype(np.float32),
    pa.int32(): np.dtype(np.int32),
    pa.int64(): np.dtype(np.int64),
    pa.bool_(): np.dtype(np.bool_),
    pa.timestamp("us", tz="UTC"): np.dtype(np.int64),
}


@dataclass(frozen=True)
class Leaf:
    """One output column: a path of field names from the root message.

    ``default`` is the value of an absent scalar field; ``sub_fields`` are the scalar fields
    (name, type, default) of the struct elements of a ``repeated_message`` column.
    """

    name: str
    path: tuple[str, ...]
    kind: str  # scalar | timestamp | repeated_scalar | repeated_message
    ftype: int
    arrow_type: pa.DataType
    sub_fields: tuple[tuple[str, int, Any], ...] = ()
    default: Any = None


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
                    (f.name, f.type, f.default_value)
                    for f in sub.fields
                    if f.type in _SCALAR_ARROW and not f.is_repeated
                )
                struct = pa.struct([pa.field(n, _SCALAR_ARROW[t]) for n, t, _ in scalars])
                out.append(Leaf(name, path, "repeated_message", fd.type, pa.list_(struct), scalars))
            elif sub.full_name == _TIMESTAMP:
                out.append(Leaf(name, path, "timestamp", fd.type, pa.timestamp("us", tz="UTC"), default=0))
            elif depth < _MAX_DEPTH:
                out.extend(_leaves(sub, path, depth + 1))
        elif fd.type in _SCALAR_ARROW:
            if repeated:
                out.append(Leaf(name, path, "repeated_scalar", fd.type, pa.list_(_SCALAR_ARROW[fd.type])))
            else:
                out.append(
                    Leaf(name, path, "scalar", fd.type, _SCALAR_ARROW[fd.type], default=fd.default_value)
                )
    return out


def _read_varint(buf: Any, pos: int, end: int) -> tuple[int, int]:
    """Varint at ``pos`` (value modulo 2**64, as upb reads it) and its width in bytes."""
    value = shift = 0
    start = pos
    while True:
        if pos >= end or pos - start >= 10:
            raise _Reject
        b = buf[pos]
        value |= (b & 0x7F) << shift
        pos += 1
        if not b & 0x80:
            return value & 0xFFFF_FFFF_FFFF_FFFF, pos - start
        shift += 7


class _Reject(Exception):
    """The message uses a feature the vectorised path leaves to upb (or is malformed)."""


# --------------------------------------------------------------------------------------------
# Programs: the field sequence of one message, and where each value goes.


@dataclass(eq=False)
class _Step:
    """One field occurrence: tag bytes, wire type and what to do with the value."""

    tag: int  # the tag bytes as a little-endian integer
    tag_len: int
    wire: int
    width: int = 1  # varint width (value, or length prefix) in the message the step comes from
    action: str = "skip"  # varint | fixed | bytes | packed | msg | skip
    slot: tuple[Any, ...] | None = None
    ftype: int = 0
    size: int = 0  # fixed width, or element size of a packed array
    dtype: str = ""
    sub: list[_Step] | None = None
    allowed: np.ndarray | None = None  # values of a closed enum
    utf8: bool = False


@dataclass(eq=False)
class _Layout:
    """Byte layout of messages that follow a program: where its structural bytes and values are.

    Structural bytes are tags, length prefixes and varint continuation bits, compared as 8-byte
    words under a mask. Messages whose structural bytes equal a layout's are parsed identically, so
    one vectorised comparison recognises every message of a layout, and their values sit at the
    layout's offsets. The last field, when it is a string, bytes or packed array, may run to the
    end of the message: its length prefix must then equal what is left of the message.
    """

    length: int  # message length (when there is no open-ended last field)
    word_offsets: np.ndarray
    word_masks: np.ndarray
    word_values: np.ndarray
    offsets: np.ndarray  # per tracked step: offset of its value (data of length-delimited fields)
    sizes: np.ndarray  # per tracked step: varint width, or data length (-1: to the message end)
    # (length prefix offset, its width, data offset, element size) of an open-ended last field
    tail: tuple[int, int, int, int] | None

    def match(self, wire: WireReads, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Which of the messages have this layout."""
        if self.tail is None:
            ok = lengths == self.length
        else:
            prefix, width, data, element = self.tail
            ok = lengths >= data
            size = (lengths - data).astype(np.uint64)
            ok &= compact(wire.window(starts + prefix), width) == size
            if element > 1:
                ok &= size % U64(element) == 0
        if not self.word_offsets.shape[0]:
            return ok
        rows = None if ok.all() else np.flatnonzero(ok)
        if rows is not None and not rows.shape[0]:
            return ok
        candidates = starts if rows is None else starts[rows]
        words = wire.window((candidates[:, None] + self.word_offsets).ravel()).reshape(
            candidates.shape[0], -1
        )
        fits = ((words & self.word_masks) == self.word_values).all(axis=1)
        if rows is None:
            return fits
        ok[rows] = fits
        return ok


@dataclass(eq=False)
class _Program:
    """A field sequence, and the byte layouts of it met so far."""

    steps: list[_Step]
    counts: dict[str, int]  # elements of repeated columns
    slots: list[_Step]  # steps whose values are columns
    strings: list[_Step]  # string fields, whose UTF-8 must be valid
    enums: list[_Step]  # closed enum fields, whose values must be known
    tracked: list[_Step] = field(default_factory=list)  # the above, each once
    layouts: list[_Layout] = field(default_factory=list)
    uses: int = 0
    layouts_from: int = 0  # use from which on layouts are tried again

    def __post_init__(self) -> None:
        for st in (*self.slots, *self.strings, *self.enums):
            if not any(st is t for t in self.tracked):
                self.tracked.append(st)
        self.column = {id(st): j for j, st in enumerate(self.tracked)}
        last = self.steps[-1] if self.steps else None
        self.tail = last if last is not None and last.wire == 2 and last.action != "msg" else None

    def layout_of(self, buf: Any, start: int, end: int) -> _Layout | None:
        """The layout of one message, or ``None`` if it does not follow the program."""
        checks: list[tuple[int, int, int]] = []
        where: dict[int, tuple[int, int]] = {}
        tail: list[tuple[int, int, int, int]] = []

        def walk(steps: list[_Step], pos: int, stop: int) -> int:
            for st in steps:
                if pos + st.tag_len > stop:
                    raise _Reject
                for k in range(st.tag_len):
                    byte = (st.tag >> (8 * k)) & 0xFF
                    if buf[pos + k] != byte:
                        raise _Reject
                    checks.append((pos + k - start, 0xFF, byte))
                pos += st.tag_len
                if st.wire == 0:
                    _, width = _read_varint(buf, pos, stop)
                    checks.extend((pos + k - start, 0x80, 0x80 if k < width - 1 else 0) for k in range(width))
                    where[id(st)] = (pos - start, width)
                    pos += width
                elif st.wire == 2:
                    length, width = _read_varint(buf, pos, stop)
                    data = pos + width
                    if st is self.tail:
                        checks.extend(
                            (pos + k - start, 0x80, 0x80 if k < width - 1 else 0) for k in range(width)
                        )
                        tail.append(
                            (pos - start, width, data - start, st.size if st.action == "packed" else 1)
                        )
                        where[id(st)] = (data - start, -1)
                    else:
                        checks.extend((pos + k - start, 0xFF, buf[pos + k]) for k in range(width))
                        where[id(st)] = (data - start, length)
                    pos = data + length
                    if pos > stop or (st.action == "packed" and length % st.size):
                        raise _Reject
                    if st.action == "msg" and walk(st.sub or [], data, pos) != pos:
                        raise _Reject
                else:
                    where[id(st)] = (pos - start, st.size)
                    pos += st.size
            return pos

        try:
            if walk(self.steps, start, end) != end or (tail and tail[0][1] > 8):
                return None
        except _Reject:
            return None
        words: dict[int, list[int]] = {}
        for offset, mask, value in checks:
            word = words.setdefault(offset & ~7, [0, 0])
            word[0] |= mask << (8 * (offset & 7))
            word[1] |= (value & mask) << (8 * (offset & 7))
        placed = np.array([where[id(st)] for st in self.tracked], dtype=np.int64).reshape(-1, 2)
        return _Layout(
            end - start,
            np.array(sorted(words), dtype=np.int64),
            np.array([words[w][0] for w in sorted(words)], dtype=np.uint64),
            np.array([words[w][1] for w in sorted(words)], dtype=np.uint64),
            placed[:, 0].copy(),
            placed[:, 1].copy(),
            tail[0] if tail else None,
        )

    def add_layout(self, layout: _Layout) -> None:
        self.layouts.append(layout)
        del self.layouts[:-_MAX_LAYOUTS]


_WIRE_OF: dict[int, int] = {t: 0 for t in _VARINT_TYPES}
_WIRE_OF.update({t: 1 if size == 8 else 5 for t, (size, _) in _FIXED.items()})
_WIRE_OF.update({FD.TYPE_STRING: 2, FD.TYPE_BYTES: 2})

_Ctx = tuple[Any, ...] | None  # ("path", prefix) | ("ts", leaf) | ("elem", leaf, j) | None


class _Deriver:
    """Derive a :class:`_Program` from one message (scalar Python walk)."""

    def __init__(self, buf: Any, by_path: dict[tuple[str, ...], Leaf], fields: Callable[[Descriptor], Any]):
        self.buf = buf
        self.by_path = by_path
        self.fields = fields
        self.counts: dict[str, int] = {}
        self.slots: list[_Step] = []
        self.strings: list[_Step] = []
        self.enums: list[_Step] = []

    def derive(self, start: int, end: int, desc: Descriptor) -> _Program | None:
        try:
            steps = self.walk(start, end, desc, ("path", ()), 0)
        except _Reject:
            return None
        return _Program(steps, self.counts, self.slots, self.strings, self.enums)

    def walk(self, pos: int, stop: int, desc: Descriptor, ctx: _Ctx, depth: int) -> list[_Step]:
        if depth > _MAX_NESTING:
            raise _Reject
        buf = self.buf
        steps: list[_Step] = []
        seen: set[int] = set()
        oneofs: set[str] = set()
        occurrences: dict[int, int] = {}
        packed: set[int] = set()
        by_number = self.fields(desc)
        while pos < stop:
            tag, tag_len = _read_varint(buf, pos, stop)
            if tag_len > 5 or tag > 0xFFFF_FFFF or tag < 8:
                raise _Reject
            step = _Step(int.from_bytes(buf[pos : pos + tag_len], "little"), tag_len, tag & 7)
            pos += tag_len
            num, wire = tag >> 3, tag & 7
            if wire == 0:
                _, step.width = _read_varint(buf, pos, stop)
                data, value_end = pos, pos + step.width
            elif wire in (1, 5):
                step.size = 8 if wire == 1 else 4
                data, value_end = pos, pos + step.size
            elif wire == 2:
                length, step.width = _read_varint(buf, pos, stop)
                data = pos + step.width
                value_end = data + length
            else:
                raise _Reject
            if value_end > stop:
                raise _Reject
            fd = by_number.get(num)
            if fd is not None:
                if fd.is_repeated:
                    j = occurrences.get(num, 0)
                    occurrences[num] = j + 1
                    if num in packed or (wire == 2 and fd.type in _FIXED and j):
                        raise _Reject
                    if wire == 2 and fd.type in _FIXED:
                        packed.add(num)
                else:
                    if num in seen:
                        raise _Reject
                    seen.add(num)
                    oneof = fd.containing_oneof
                    if oneof is not None:
                        if oneof.name in oneofs:
                            raise _Reject
                        oneofs.add(oneof.name)
                    j = 0
                self.bind(step, fd, ctx, j, data, value_end, depth)
                if step.slot is not None:
                    self.slots.append(step)
                if step.utf8 and step.action == "bytes":
                    self.strings.append(step)
                if step.allowed is not None:
                    self.enums.append(step)
            steps.append(step)
            pos = value_end
        return steps

    def bind(
        self, step: _Step, fd: FieldDescriptor, ctx: _Ctx, j: int, data: int, end: int, depth: int
    ) -> None:
        ftype = fd.type
        step.ftype = ftype
        leaf = self.by_path.get((*ctx[1], fd.name)) if ctx is not None and ctx[0] == "path" else None
        if ftype == FD.TYPE_MESSAGE:
            if step.wire != 2 or fd.message_type.GetOptions().map_entry:
                raise _Reject
            sub_ctx: _Ctx = None
            if fd.is_repeated:
                if leaf is not None and leaf.kind == "repeated_message":
                    sub_ctx = ("elem", leaf, j)
                    self.counts[leaf.name] = j + 1
            elif leaf is not None and leaf.kind == "timestamp":
                sub_ctx = ("ts", leaf)
            elif ctx is not None and ctx[0] == "path":
                sub_ctx = ("path", (*ctx[1], fd.name))
            step.action = "msg"
            step.sub = self.walk(data, end, fd.message_type, sub_ctx, depth + 1)
            return
        if ftype not in _SCALAR_ARROW:
            raise _Reject
        step.utf8 = ftype == FD.TYPE_STRING
        if fd.is_repeated and step.wire == 2 and ftype in _FIXED:
            size, step.dtype = _FIXED[ftype]
            if (end - data) % size:
                raise _Reject
            step.action, step.size = "packed", size
            if leaf is not None and leaf.kind == "repeated_scalar":
                step.slot = ("p", leaf.name)
            return
        if step.wire != _WIRE_OF[ftype]:
            raise _Reject
        step.action = "varint" if step.wire == 0 else "bytes" if step.wire == 2 else "fixed"
        if step.action == "fixed":
            step.dtype = _FIXED[ftype][1]
        if ftype == FD.TYPE_ENUM and fd.enum_type.is_closed:
            step.allowed = np.array(sorted({v.number for v in fd.enum_type.values}), dtype=np.int32)
        if ctx is None:
            return
        if fd.is_repeated:
            if leaf is not None and leaf.kind == "repeated_scalar":
                step.slot = ("r", leaf.name, j)
                self.counts[leaf.name] = j + 1
        elif ctx[0] == "path":
            if leaf is not None and leaf.kind == "scalar":
                step.slot = ("s", leaf.name)
        elif ctx[0] == "ts":
            if fd.number in (1, 2):
                step.slot = ("ts", ctx[1].name, fd.number)
        elif ctx[0] == "elem" and any(name == fd.name for name, _, _ in ctx[1].sub_fields):
            step.slot = ("e", ctx[1].name, ctx[2], fd.name)


@dataclass
class _Run:
    """Per-message state of running a program over candidate messages."""

    bad: np.ndarray
    values: dict[tuple[Any, ...], tuple[_Step, Any, Any]] = field(default_factory=dict)
    strings: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)


def _execute(wire: WireReads, steps: list[_Step], pos: np.ndarray, run: _Run) -> np.ndarray:
    """Advance every message through ``steps``; positions only grow, failures set ``run.bad``."""
    for st in steps:
        if st.tag_len == 1:
            run.bad |= wire.u8(pos) != st.tag
        else:
            run.bad |= (wire.window(pos) & TAG_MASK[st.tag_len]) != st.tag
        pos = pos + st.tag_len
        if st.wire == 0:
            val, width = wire.varint(pos, st.width)
            if st.slot is not None:
                run.values[st.slot] = (st, val, None)
            if st.allowed is not None:
                run.bad |= ~np.isin(val.astype(np.uint32).view(np.int32), st.allowed)
            pos = pos + width
        elif st.wire == 2:
            length, width = wire.varint(pos, st.width)
            if not isinstance(width, int) or width > 5:
                length = np.minimum(length, MAX_LEN)
            length = length.astype(np.int64)
            data = pos + width
            pos = data + length
            if st.action == "msg":
                assert st.sub is not None
                run.bad |= _execute(wire, st.sub, data, run) != pos
            elif st.action != "skip":
                if st.slot is not None:
                    run.values[st.slot] = (st, data, length)
                if st.action == "packed":
                    run.bad |= (length % st.size) != 0
                elif st.utf8:
                    run.strings.append((data, length))
        else:
            if st.slot is not None:
                run.values[st.slot] = (st, pos, None)
            pos = pos + st.size
    return pos


def _utf8_ok(wire: WireReads, pos: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Which of the strings are valid UTF-8 (as upb requires of string fields)."""
    try:
        wire.binary(pos, lengths, pa.string()).validate(full=True)
        return np.ones(pos.shape[0], dtype=bool)
    except pa.ArrowInvalid:
        ok = np.ones(pos.shape[0], dtype=bool)
        for i, (p, ln) in enumerate(zip(pos.tolist(), lengths.tolist(), strict=True)):
            try:
                bytes(wire.buf[p : p + ln]).decode("utf-8")
            except UnicodeDecodeError:
                ok[i] = False
        return ok


def _run_layouts(wire: WireReads, program: _Program, starts: np.ndarray, ends: np.ndarray) -> _Run | None:
    """Run a program by layouts; ``None`` when its messages have too many different layouts."""
    n = int(starts.shape[0])
    lengths = ends - starts
    which = np.full(n, -1, dtype=np.int64)  # layout of each message (-1: none)
    used: list[_Layout] = []
    pending = np.arange(n)
    for layout in program.layouts:
        match = layout.match(wire, starts[pending], lengths[pending])
        if match.any():
            which[pending[match]] = len(used)
            used.append(layout)
            pending = pending[~match]
            if not pending.shape[0]:
                break
    new = 0
    while pending.shape[0] and new < _NEW_LAYOUTS:
        new += 1
        first = int(pending[0])
        found = program.layout_of(wire.buf, int(starts[first]), int(ends[first]))
        if found is None:
            pending = pending[1:]  # does not follow the program: left to other programs
            continue
        program.add_layout(found)
        match = found.match(wire, starts[pending], lengths[pending])
        which[pending[match]] = len(used)
        used.append(found)
        pending = pending[~match]
    if not used or (pending.shape[0] and 2 * int((which < 0).sum()) > n):
        return None  # too many layouts: run step by step
    run = _Run(which < 0)
    lay = np.maximum(which, 0)
    offsets = np.stack([u.offsets for u in used])
    sizes = np.stack([u.sizes for u in used])
    same_offset = (offsets == offsets[0]).all(axis=0).tolist()
    same_size = (sizes == sizes[0]).all(axis=0).tolist()

    def column(st: _Step) -> tuple[np.ndarray, Any]:
        j = program.column[id(st)]
        pos = starts + (int(offsets[0, j]) if same_offset[j] else offsets[lay, j])
        if st is program.tail:
            return pos, ends - pos
        return pos, int(sizes[0, j]) if same_size[j] else sizes[lay, j]

    def varint(st: _Step) -> np.ndarray:
        pos, width = column(st)
        if isinstance(width, int) and width <= 8:
            return compact(wire.window(pos), width)
        return wire.varint(pos, 9)[0]

    def lengths_of(st: _Step) -> tuple[np.ndarray, np.ndarray]:
        pos, size = column(st)
        return pos, np.full(n, size, dtype=np.int64) if isinstance(size, int) else size

    for st in program.slots:
        assert st.slot is not None
        if st.action == "varint":
            run.values[st.slot] = (st, varint(st), None)
        elif st.action == "fixed":
            run.values[st.slot] = (st, column(st)[0], None)
        else:
            run.values[st.slot] = (st, *lengths_of(st))
    for st in program.enums:
        assert st.allowed is not None
        run.bad |= ~np.isin(varint(st).astype(np.uint32).view(np.int32), st.allowed)
    for st in program.strings:
        run.strings.append(lengths_of(st))
    return run


def _check_strings(wire: WireReads, strings: list[tuple[np.ndarray, np.ndarray]], ok: np.ndarray) -> None:
    """Clear ``ok`` of messages with a string field that is not valid UTF-8."""
    rows = np.flatnonzero(ok)
    everyone = rows.shape[0] == ok.shape[0]
    pos = np.concatenate([p if everyone else p[rows] for p, _ in strings])
    lengths = np.concatenate([ln if everyone else ln[rows] for _, ln in strings])
    _, data = wire.gather_bytes(pos, lengths)
    if not len(data) or np.frombuffer(data, dtype=np.uint8).max() < 0x80:
        return  # ASCII
    for p, ln in strings:
        ok[rows] &= _utf8_ok(wire, p[rows], ln[rows])


# --------------------------------------------------------------------------------------------
# Column pieces: ("num", ndarray) | ("bin", pos, lengths) | ("const", value) | ("arrow", pa.Array)

_Piece = tuple[Any, ...]


def _convert_varint(values: np.ndarray, ftype: int) -> np.ndarray:
    """uint64 varint values to the field's values, with upb's truncations."""
    if ftype in (FD.TYPE_INT32, FD.TYPE_ENUM):
        return values.astype(np.uint32).view(np.int32)
    if ftype == FD.TYPE_UINT32:
        return values.astype(np.uint32).astype(np.int64)
    if ftype == FD.TYPE_SINT32:
        u = values.astype(np.uint32)
        return ((u >> np.uint32(1)) ^ (np.uint32(0) - (u & np.uint32(1)))).view(np.int32)
    if ftype == FD.TYPE_SINT64:
        return ((values >> U64(1)) ^ (U64(0) - (values & U64(1)))).view(np.int64)
    if ftype == FD.TYPE_BOOL:
        return values != 0
    return values.view(np.int64)


_UNSIGNED64 = {FD.TYPE_UINT64, FD.TYPE_FIXED64}


def _signed64(value: int) -> int:
    """A uint64 value as the int64 with the same bits (the column type of uint64 fields)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _is_empty(value: Any) -> bool:
    return isinstance(value, str | bytes) and not value


def _to_arrow(wire: WireReads, piece: _Piece, n: int, arrow_type: pa.DataType) -> pa.Array:
    kind = piece[0]
    if kind == "num":
        return pa.array(piece[1], type=arrow_type)
    if kind == "bin":
        return wire.binary(piece[1], piece[2], arrow_type)
    if kind == "const":
        return pa.repeat(pa.scalar(piece[1], type=arrow_type), n)
    array: pa.Array = piece[1]
    return array


def _combine(
    wire: WireReads, pieces: list[_Piece], places: list[np.ndarray], n: int, arrow_type: pa.DataType
) -> _Piece:
    """One piece of ``n`` rows whose rows ``places[i]`` come from ``pieces[i]``."""
    kinds = {p[0] for p in pieces}
    dtype = _NP_DTYPES.get(arrow_type)
    if dtype is not None and kinds <= {"num", "const"}:
        values = np.empty(n, dtype=dtype)
        for piece, where in zip(pieces, places, strict=True):
            values[where] = piece[1]
        return ("num", values)
    if kinds <= {"bin", "const"} and all(p[0] == "bin" or _is_empty(p[1]) for p in pieces):
        pos = np.zeros(n, dtype=np.int64)
        lengths = np.zeros(n, dtype=np.int64)
        for piece, where in zip(pieces, places, strict=True):
            if piece[0] == "bin":
                pos[where] = piece[1]
                lengths[where] = piece[2]
        return ("bin", pos, lengths)
    arrays = [
        _to_arrow(wire, piece, int(where.shape[0]), arrow_type)
        for piece, where in zip(pieces, places, strict=True)
    ]
    order = np.argsort(np.concatenate(places), kind="stable")
    return ("arrow", pa.concat_arrays(arrays).take(pa.array(order)))


def _interleave(wire: WireReads, pieces: list[_Piece], n: int, arrow_type: pa.DataType) -> _Piece:
    """Rows ``i * k + j`` from row ``i`` of ``pieces[j]`` (elements of ``k`` occurrences)."""
    k = len(pieces)
    kinds = {p[0] for p in pieces}
    if kinds == {"num"}:
        return ("num", np.stack([p[1] for p in pieces], axis=1).ravel())
    if kinds == {"bin"}:
        pos = np.stack([p[1] for p in pieces], axis=1).ravel()
        return ("bin", pos, np.stack([p[2] for p in pieces], axis=1).ravel())
    grid = (np.arange(n)[:, None] * k + np.arange(k)[None, :]).T  # occurrence j -> its rows
    return _combine(wire, pieces, list(grid), n * k, arrow_type)


@dataclass
class _Plan:
    """Columns of one decode request, and the programs that recently matched its messages."""

    leaves: list[Leaf]
    by_path: dict[tuple[str, ...], Leaf]
    programs: list[_Program] = field(default_factory=list)

    def remember(self, program: _Program) -> None:
        if self.programs and self.programs[0] is program:
            return
        if program in self.programs:
            self.programs.remove(program)
        self.programs.insert(0, program)
        del self.programs[_MAX_CACHED:]


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
        parts: list[tuple[np.ndarray, dict[str, _Piece]]] = []
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
                program: _Program | None = cached.pop(0)
            else:
                program = _Deriver(buf, plan.by_path, self._fields_of).derive(
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
            ok, run = self._run(
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
            parts.append((members, self._pieces(wire, program, run, ok, leaves)))
            remaining = remaining[~ok]
        if slow or remaining.shape[0]:
            idx = np.sort(np.concatenate([np.asarray(slow, dtype=np.int64), remaining]))
            parts.append((idx, self._decode_slow(buf, starts[idx], ends[idx], leaves)))
        out: dict[str, pa.Array] = {}
        for leaf in leaves:
            if len(parts) == 1:
                piece = parts[0][1][leaf.name]
            else:
                piece = _combine(
                    wire,
                    [cols[leaf.name] for _, cols in parts],
                    [idx for idx, _ in parts],
                    n,
                    leaf.arrow_type,
                )
            out[leaf.name] = _to_arrow(wire, piece, n, leaf.arrow_type)
        return pa.table(out)

    @staticmethod
    def _run(
        wire: WireReads, program: _Program, starts: np.ndarray, ends: np.ndarray
    ) -> tuple[np.ndarray, _Run]:
        """Which messages the program parses, and their values."""
        program.uses += 1
        run = None
        if program.uses >= program.layouts_from:
            run = _run_layouts(wire, program, starts, ends)
            if run is None:
                program.layouts_from = program.uses + _LAYOUT_RETRY
        if run is None:
            run = _Run(np.zeros(starts.shape[0], dtype=bool))
            pos = _execute(wire, program.steps, starts, run)
            run.bad |= pos != ends
        ok = ~run.bad
        if run.strings and ok.any():
            _check_strings(wire, run.strings, ok)
        return ok, run

    def _pieces(
        self, wire: WireReads, program: _Program, run: _Run, ok: np.ndarray, leaves: list[Leaf]
    ) -> dict[str, _Piece]:
        everyone = bool(ok.all())
        m = int(ok.sum())

        def sel(a: Any) -> Any:
            return a if everyone or np.ndim(a) == 0 else a[ok]

        def piece(slot: tuple[Any, ...], default: Any, dtype: np.dtype[Any] | None) -> _Piece:
            found = run.values.get(slot)
            if found is None:
                return ("const", default)
            st, a, b = found
            if st.action == "varint":
                values = _convert_varint(sel(a), st.ftype)
            elif st.action == "fixed":
                values = wire.fixed(sel(a), st.dtype)
            else:
                return ("bin", sel(a), sel(b))
            return ("num", values if dtype is None else values.astype(dtype, copy=False))

        out: dict[str, _Piece] = {}
        for leaf in leaves:
            name = leaf.name
            if leaf.kind == "scalar":
                out[name] = piece(("s", name), leaf.default, _NP_DTYPES.get(leaf.arrow_type))
            elif leaf.kind == "timestamp":
                sec = piece(("ts", name, 1), 0, np.dtype(np.int64))
                nanos = piece(("ts", name, 2), 0, np.dtype(np.int64))
                if sec[0] == "const" and nanos[0] == "const":
                    out[name] = ("const", 0)
                else:
                    out[name] = ("num", sec[1] * 1_000_000 + nanos[1] // 1000)
                    if np.ndim(out[name][1]) == 0:
                        out[name] = ("num", np.full(m, out[name][1], dtype=np.int64))
            elif leaf.kind == "repeated_scalar":
                out[name] = ("arrow", self._repeated_scalar(wire, leaf, program, run, sel, m, piece))
            else:
                out[name] = ("arrow", self._repeated_message(wire, leaf, program, m, piece))
        return out

    @staticmethod
    def _repeated_scalar(
        wire: WireReads,
        leaf: Leaf,
        program: _Program,
        run: _Run,
        sel: Callable[[Any], Any],
        m: int,
        piece: Callable[[tuple[Any, ...], Any, Any], _Piece],
    ) -> pa.Array:
        value_type = leaf.arrow_type.value_type
        dtype = _NP_DTYPES.get(value_type)
        packed = run.values.get(("p", leaf.name))
        if packed is not None:
            st, pos, lengths = packed
            lengths = sel(lengths)
            byte_offsets, data = wire.gather_bytes(sel(pos), lengths)
            values = np.frombuffer(data, dtype=st.dtype)
            offsets = (byte_offsets // st.size).astype(np.int32)
            return pa.ListArray.from_arrays(
                pa.array(offsets), pa.array(values.astype(dtype), type=value_type)
            )
        k = program.counts.get(leaf.name, 0)
        if k == 0:
            return pa.ListArray.from_arrays(
                pa.array(np.zeros(m + 1, dtype=np.int32)), pa.array([], value_type)
            )
        pieces = [piece(("r", leaf.name, j), None, dtype) for j in range(k)]
        values_piece = _interleave(wire, pieces, m, value_type)
        offsets = pa.array((np.arange(m + 1) * k).astype(np.int32))
        return pa.ListArray.from_arrays(offsets, _to_arrow(wire, values_piece, m * k, value_type))

    @staticmethod
    def _repeated_message(
        wire: WireReads,
        leaf: Leaf,
        program: _Program,
        m: int,
        piece: Callable[[tuple[Any, ...], Any, Any], _Piece],
    ) -> pa.Array:
        struct_type = leaf.arrow_type.value_type
        k = program.counts.get(leaf.name, 0)
        children = []
        for (sub, _, default), child in zip(leaf.sub_fields, struct_type, strict=True):
            pieces = [piece(("e", leaf.name, j, sub), default, _NP_DTYPES.get(child.type)) for j in range(k)]
            if k:
                children.append(_to_arrow(wire, _interleave(wire, pieces, m, child.type), m * k, child.type))
            else:
                children.append(pa.array([], child.type))
        values = pa.StructArray.from_arrays(children, fields=list(struct_type))
        offsets = pa.array((np.arange(m + 1) * k).astype(np.int32))
        return pa.ListArray.from_arrays(offsets, values)

    def _decode_slow(
        self, buf: Any, starts: np.ndarray, ends: np.ndarray, leaves: list[Leaf]
    ) -> dict[str, _Piece]:
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
                    obj = [_signed64(v) for v in obj] if leaf.ftype in _UNSIGNED64 else list(obj)
                elif leaf.kind == "repeated_message":
                    obj = [
                        {
                            n: _signed64(getattr(item, n)) if t in _UNSIGNED64 else getattr(item, n)
                            for n, t, _ in leaf.sub_fields
                        }
                        for item in obj
                    ]
                elif leaf.ftype in _UNSIGNED64:
                    obj = _signed64(obj)
                values[leaf.name].append(obj)
        out: dict[str, _Piece] = {}
        for leaf in leaves:
            if leaf.kind == "timestamp":
                array = pa.array(values[leaf.name], pa.int64()).cast(leaf.arrow_type)
            else:
                array = pa.array(values[leaf.name], leaf.arrow_type)
            out[leaf.name] = ("arrow", array)
        return out
