"""Programs: the field sequence of one message, and where each value goes.

A :class:`Program` is derived from one message by a scalar walk (:class:`Deriver`): the tag
bytes, wire type and varint widths of every field occurrence, in order, and the column slot each
value fills. :meth:`Program.layout_of` derives the exact byte layout of one message that follows
the program (:class:`Layout`), which recognises every message laid out the same way with one
vectorised comparison. Running programs over many messages is :mod:`nuro_ml.etl.proto_execute`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from nuro_ml.etl.proto_schema import FD, FIXED, SCALAR_ARROW, WIRE_OF, Leaf
from nuro_ml.etl.wire_reads import U64, WireReads, compact

#: Nesting beyond this is left to the per-message parser (upb's own limit is 100).
MAX_NESTING = 32
#: Layouts kept per program.
MAX_LAYOUTS = 16


def read_varint(buf: Any, pos: int, end: int) -> tuple[int, int]:
    """Varint at ``pos`` (value modulo 2**64, as upb reads it) and its width in bytes."""
    value = shift = 0
    start = pos
    while True:
        if pos >= end or pos - start >= 10:
            raise Reject
        b = buf[pos]
        value |= (b & 0x7F) << shift
        pos += 1
        if not b & 0x80:
            return value & 0xFFFF_FFFF_FFFF_FFFF, pos - start
        shift += 7


class Reject(Exception):
    """The message uses a feature the vectorised path leaves to upb (or is malformed)."""


# --------------------------------------------------------------------------------------------
# Programs: the field sequence of one message, and where each value goes.


@dataclass(eq=False)
class Step:
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
    sub: list[Step] | None = None
    allowed: np.ndarray | None = None  # values of a closed enum
    utf8: bool = False


@dataclass(eq=False)
class Layout:
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
    _dense_words: tuple[np.ndarray, np.ndarray] | None = None

    def _dense(self) -> tuple[np.ndarray, np.ndarray]:
        """Masks and values of every word up to the last checked one (zero where unchecked)."""
        if self._dense_words is None:
            width = int(self.word_offsets[-1]) // 8 + 1
            masks = np.zeros(width, dtype=np.uint64)
            values = np.zeros(width, dtype=np.uint64)
            masks[self.word_offsets // 8] = self.word_masks
            values[self.word_offsets // 8] = self.word_values
            self._dense_words = (masks, values)
        return self._dense_words

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
        span = int(self.word_offsets[-1]) + 8
        block = wire.rows(candidates, span)
        if block is not None:
            # Each message's first ``span`` bytes as 8-byte words: one copy per message instead
            # of one read per word. Words without structural bytes have a zero mask.
            masks, values = self._dense()
            fits = ((block.view("<u8") & masks) == values).all(axis=1)
        else:
            words = wire.window((candidates[:, None] + self.word_offsets).ravel()).reshape(
                candidates.shape[0], -1
            )
            fits = ((words & self.word_masks) == self.word_values).all(axis=1)
        if rows is None:
            return fits
        ok[rows] = fits
        return ok


@dataclass(eq=False)
class Program:
    """A field sequence, and the byte layouts of it met so far."""

    steps: list[Step]
    counts: dict[str, int]  # elements of repeated columns
    slots: list[Step]  # steps whose values are columns
    strings: list[Step]  # string fields, whose UTF-8 must be valid
    enums: list[Step]  # closed enum fields, whose values must be known
    tracked: list[Step] = field(default_factory=list)  # the above, each once
    layouts: list[Layout] = field(default_factory=list)
    uses: int = 0
    layouts_from: int = 0  # use from which on layouts are tried again

    def __post_init__(self) -> None:
        for st in (*self.slots, *self.strings, *self.enums):
            if not any(st is t for t in self.tracked):
                self.tracked.append(st)
        self.column = {id(st): j for j, st in enumerate(self.tracked)}
        last = self.steps[-1] if self.steps else None
        self.tail = last if last is not None and last.wire == 2 and last.action != "msg" else None

    def layout_of(self, buf: Any, start: int, end: int) -> Layout | None:
        """The layout of one message, or ``None`` if it does not follow the program."""
        checks: list[tuple[int, int, int]] = []
        where: dict[int, tuple[int, int]] = {}
        tail: list[tuple[int, int, int, int]] = []

        def walk(steps: list[Step], pos: int, stop: int) -> int:
            for st in steps:
                if pos + st.tag_len > stop:
                    raise Reject
                for k in range(st.tag_len):
                    byte = (st.tag >> (8 * k)) & 0xFF
                    if buf[pos + k] != byte:
                        raise Reject
                    checks.append((pos + k - start, 0xFF, byte))
                pos += st.tag_len
                if st.wire == 0:
                    _, width = read_varint(buf, pos, stop)
                    checks.extend((pos + k - start, 0x80, 0x80 if k < width - 1 else 0) for k in range(width))
                    where[id(st)] = (pos - start, width)
                    pos += width
                elif st.wire == 2:
                    length, width = read_varint(buf, pos, stop)
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
                        raise Reject
                    if st.action == "msg" and walk(st.sub or [], data, pos) != pos:
                        raise Reject
                else:
                    where[id(st)] = (pos - start, st.size)
                    pos += st.size
            return pos

        try:
            if walk(self.steps, start, end) != end or (tail and tail[0][1] > 8):
                return None
        except Reject:
            return None
        words: dict[int, list[int]] = {}
        for offset, mask, value in checks:
            word = words.setdefault(offset & ~7, [0, 0])
            word[0] |= mask << (8 * (offset & 7))
            word[1] |= (value & mask) << (8 * (offset & 7))
        placed = np.array([where[id(st)] for st in self.tracked], dtype=np.int64).reshape(-1, 2)
        return Layout(
            end - start,
            np.array(sorted(words), dtype=np.int64),
            np.array([words[w][0] for w in sorted(words)], dtype=np.uint64),
            np.array([words[w][1] for w in sorted(words)], dtype=np.uint64),
            placed[:, 0].copy(),
            placed[:, 1].copy(),
            tail[0] if tail else None,
        )

    def add_layout(self, layout: Layout) -> None:
        self.layouts.append(layout)
        del self.layouts[:-MAX_LAYOUTS]


#: Where a walk is: ("path", prefix) | ("ts", leaf) | ("elem", leaf, j, prefix in the element) |
#: ("elem_ts", leaf, j, struct field) | None (no column below).
_Ctx = tuple[Any, ...] | None


def _kept_whole(leaf: Leaf | None, ctx: _Ctx, name: str) -> bool:
    """Whether the message field ``name`` under ``ctx`` is a column of its serialized bytes."""
    if leaf is not None:
        return leaf.raw_message
    if ctx is not None and ctx[0] == "elem":
        sub = ctx[1].sub_by_path.get((*ctx[3], name))
        return sub is not None and sub.raw_message
    return False


def _listed(ctx: tuple[Any, ...], name: str) -> bool:
    """Whether field ``name`` at an element walk's position is one of the element's struct fields."""
    return (*ctx[3], name) in ctx[1].sub_by_path


class Deriver:
    """Derive a :class:`Program` from one message (scalar Python walk)."""

    def __init__(self, buf: Any, by_path: dict[tuple[str, ...], Leaf], fields: Callable[[Descriptor], Any]):
        self.buf = buf
        self.by_path = by_path
        self.fields = fields
        self.counts: dict[str, int] = {}
        self.slots: list[Step] = []
        self.strings: list[Step] = []
        self.enums: list[Step] = []

    def derive(self, start: int, end: int, desc: Descriptor) -> Program | None:
        try:
            steps = self.walk(start, end, desc, ("path", ()), 0)
        except Reject:
            return None
        return Program(steps, self.counts, self.slots, self.strings, self.enums)

    def walk(self, pos: int, stop: int, desc: Descriptor, ctx: _Ctx, depth: int) -> list[Step]:
        if depth > MAX_NESTING:
            raise Reject
        buf = self.buf
        steps: list[Step] = []
        seen: set[int] = set()
        oneofs: set[str] = set()
        occurrences: dict[int, int] = {}
        packed: set[int] = set()
        by_number = self.fields(desc)
        while pos < stop:
            tag, tag_len = read_varint(buf, pos, stop)
            if tag_len > 5 or tag > 0xFFFF_FFFF or tag < 8:
                raise Reject
            step = Step(int.from_bytes(buf[pos : pos + tag_len], "little"), tag_len, tag & 7)
            pos += tag_len
            num, wire = tag >> 3, tag & 7
            if wire == 0:
                _, step.width = read_varint(buf, pos, stop)
                data, value_end = pos, pos + step.width
            elif wire in (1, 5):
                step.size = 8 if wire == 1 else 4
                data, value_end = pos, pos + step.size
            elif wire == 2:
                length, step.width = read_varint(buf, pos, stop)
                data = pos + step.width
                value_end = data + length
            else:
                raise Reject
            if value_end > stop:
                raise Reject
            fd = by_number.get(num)
            if fd is not None:
                if fd.is_repeated:
                    j = occurrences.get(num, 0)
                    occurrences[num] = j + 1
                    if num in packed or (wire == 2 and fd.type in FIXED and j):
                        raise Reject
                    if wire == 2 and fd.type in FIXED:
                        packed.add(num)
                else:
                    if num in seen:
                        raise Reject
                    seen.add(num)
                    oneof = fd.containing_oneof
                    if oneof is not None:
                        if oneof.name in oneofs:
                            raise Reject
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
        self, step: Step, fd: FieldDescriptor, ctx: _Ctx, j: int, data: int, end: int, depth: int
    ) -> None:
        ftype = fd.type
        if fd.is_repeated and ctx is not None and ctx[0] == "elem" and _listed(ctx, fd.name):
            # A repeated field inside an element (a list in a list) is left to upb; messages where
            # it is empty in every element run vectorised (their list fields are empty lists).
            raise Reject
        leaf = self.by_path.get((*ctx[1], fd.name)) if ctx is not None and ctx[0] == "path" else None
        if ftype == FD.TYPE_MESSAGE and _kept_whole(leaf, ctx, fd.name):
            # Past the depth limit a message is a column of its bytes: read it as a bytes field.
            ftype = FD.TYPE_BYTES
        step.ftype = ftype
        if ftype == FD.TYPE_MESSAGE:
            if step.wire != 2 or fd.message_type.GetOptions().map_entry:
                raise Reject
            sub_ctx: _Ctx = None
            if fd.is_repeated:
                if leaf is not None and leaf.kind == "repeated_message":
                    sub_ctx = ("elem", leaf, j, ())
                    self.counts[leaf.name] = j + 1
            elif leaf is not None and leaf.kind == "timestamp":
                sub_ctx = ("ts", leaf)
            elif ctx is not None and ctx[0] == "path":
                sub_ctx = ("path", (*ctx[1], fd.name))
            elif ctx is not None and ctx[0] == "elem":
                element, path = ctx[1], (*ctx[3], fd.name)
                sub = element.sub_by_path.get(path)
                if sub is not None and sub.kind == "timestamp":
                    sub_ctx = ("elem_ts", element, ctx[2], sub)
                elif path in element.sub_prefixes:
                    sub_ctx = ("elem", element, ctx[2], path)
            step.action = "msg"
            step.sub = self.walk(data, end, fd.message_type, sub_ctx, depth + 1)
            return
        if ftype not in SCALAR_ARROW:
            raise Reject
        step.utf8 = ftype == FD.TYPE_STRING
        if fd.is_repeated and step.wire == 2 and ftype in FIXED:
            size, step.dtype = FIXED[ftype]
            if (end - data) % size:
                raise Reject
            step.action, step.size = "packed", size
            if leaf is not None and leaf.kind == "repeated_scalar":
                step.slot = ("p", leaf.name)
            return
        if step.wire != WIRE_OF[ftype]:
            raise Reject
        step.action = "varint" if step.wire == 0 else "bytes" if step.wire == 2 else "fixed"
        if step.action == "fixed":
            step.dtype = FIXED[ftype][1]
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
        elif ctx[0] == "elem":
            sub = ctx[1].sub_by_path.get((*ctx[3], fd.name))
            if sub is not None and sub.kind == "scalar":
                step.slot = ("e", ctx[1].name, ctx[2], sub.name)
        elif ctx[0] == "elem_ts" and fd.number in (1, 2):
            step.slot = ("elem_ts", ctx[1].name, ctx[2], ctx[3].name, fd.number)
