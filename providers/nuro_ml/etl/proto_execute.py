"""Running programs over many messages at once, and assembling their values into Arrow columns.

:func:`run_program` runs a :class:`~nuro_ml.etl.proto_program.Program` over candidate messages,
by layouts while they have few (:func:`run_layouts`) or step by step (:func:`execute`), and says
which messages it parses. :func:`assemble` turns the values of those messages into column pieces;
:func:`combine` and :func:`to_arrow` merge the pieces of several programs into Arrow arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from nuro_ml.etl.proto_program import Layout, Program, Step
from nuro_ml.etl.proto_schema import FD, NP_DTYPES, Leaf
from nuro_ml.etl.wire_reads import MAX_LEN, TAG_MASK, U64, WireReads, compact

#: Layouts derived per call before a program runs step by step instead.
NEW_LAYOUTS = 6
#: A program whose messages had too many layouts runs step by step for this many uses.
LAYOUT_RETRY = 16


#: Marks a fixed-width slot whose values are already read (not positions to read them at).
GATHERED = "gathered"


@dataclass
class Run:
    """Per-message state of running a program over candidate messages."""

    bad: np.ndarray
    values: dict[tuple[Any, ...], tuple[Step, Any, Any]] = field(default_factory=dict)
    strings: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)


def execute(wire: WireReads, steps: list[Step], pos: np.ndarray, run: Run) -> np.ndarray:
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
                run.bad |= execute(wire, st.sub, data, run) != pos
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


def utf8_ok(wire: WireReads, pos: np.ndarray, lengths: np.ndarray) -> np.ndarray:
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


def run_layouts(wire: WireReads, program: Program, starts: np.ndarray, ends: np.ndarray) -> Run | None:
    """Run a program by layouts; ``None`` when its messages have too many different layouts."""
    n = int(starts.shape[0])
    lengths = ends - starts
    which = np.full(n, -1, dtype=np.int64)  # layout of each message (-1: none)
    used: list[Layout] = []
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
    while pending.shape[0] and new < NEW_LAYOUTS:
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
    run = Run(which < 0)
    lay = np.maximum(which, 0)
    offsets = np.stack([u.offsets for u in used])
    sizes = np.stack([u.sizes for u in used])
    same_offset = (offsets == offsets[0]).all(axis=0).tolist()
    same_size = (sizes == sizes[0]).all(axis=0).tolist()

    def column(st: Step) -> tuple[np.ndarray, Any]:
        j = program.column[id(st)]
        pos = starts + (int(offsets[0, j]) if same_offset[j] else offsets[lay, j])
        if st is program.tail:
            return pos, ends - pos
        return pos, int(sizes[0, j]) if same_size[j] else sizes[lay, j]

    def varint(st: Step) -> np.ndarray:
        pos, width = column(st)
        if isinstance(width, int) and width <= 8:
            return compact(wire.window(pos), width)
        return wire.varint(pos, 9)[0]

    def lengths_of(st: Step) -> tuple[np.ndarray, np.ndarray]:
        pos, size = column(st)
        return pos, np.full(n, size, dtype=np.int64) if isinstance(size, int) else size

    # Fixed-width values at the same offset in every layout are cut from one copy of the
    # messages' leading bytes (a strided column each) instead of read one by one.
    constant = [
        int(offsets[0, program.column[id(st)]]) + st.size
        for st in program.slots
        if st.action == "fixed" and same_offset[program.column[id(st)]]
    ]
    block = wire.rows(starts, max(constant)) if constant else None
    for st in program.slots:
        assert st.slot is not None
        if st.action == "varint":
            run.values[st.slot] = (st, varint(st), None)
        elif st.action == "fixed":
            j = program.column[id(st)]
            if block is not None and same_offset[j]:
                off = int(offsets[0, j])
                cut = np.ascontiguousarray(block[:, off : off + st.size]).view(st.dtype).reshape(-1)
                run.values[st.slot] = (st, cut, GATHERED)
            else:
                run.values[st.slot] = (st, column(st)[0], None)
        else:
            run.values[st.slot] = (st, *lengths_of(st))
    for st in program.enums:
        assert st.allowed is not None
        run.bad |= ~np.isin(varint(st).astype(np.uint32).view(np.int32), st.allowed)
    for st in program.strings:
        run.strings.append(lengths_of(st))
    return run


def check_strings(wire: WireReads, strings: list[tuple[np.ndarray, np.ndarray]], ok: np.ndarray) -> None:
    """Clear ``ok`` of messages with a string field that is not valid UTF-8."""
    rows = np.flatnonzero(ok)
    everyone = rows.shape[0] == ok.shape[0]
    pos = np.concatenate([p if everyone else p[rows] for p, _ in strings])
    lengths = np.concatenate([ln if everyone else ln[rows] for _, ln in strings])
    _, data = wire.gather_bytes(pos, lengths)
    if not len(data) or np.frombuffer(data, dtype=np.uint8).max() < 0x80:
        return  # ASCII
    for p, ln in strings:
        ok[rows] &= utf8_ok(wire, p[rows], ln[rows])


# --------------------------------------------------------------------------------------------
# Column pieces: ("num", ndarray) | ("bin", pos, lengths) | ("const", value) | ("arrow", pa.Array)

Piece = tuple[Any, ...]


def convert_varint(values: np.ndarray, ftype: int) -> np.ndarray:
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


def _is_empty(value: Any) -> bool:
    return isinstance(value, str | bytes) and not value


def to_arrow(wire: WireReads, piece: Piece, n: int, arrow_type: pa.DataType) -> pa.Array:
    kind = piece[0]
    if kind == "num":
        return pa.array(piece[1], type=arrow_type)
    if kind == "bin":
        return wire.binary(piece[1], piece[2], arrow_type)
    if kind == "const":
        return pa.repeat(pa.scalar(piece[1], type=arrow_type), n)
    array: pa.Array = piece[1]
    return array


def combine(
    wire: WireReads, pieces: list[Piece], places: list[np.ndarray], n: int, arrow_type: pa.DataType
) -> Piece:
    """One piece of ``n`` rows whose rows ``places[i]`` come from ``pieces[i]``."""
    kinds = {p[0] for p in pieces}
    dtype = NP_DTYPES.get(arrow_type)
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
        to_arrow(wire, piece, int(where.shape[0]), arrow_type)
        for piece, where in zip(pieces, places, strict=True)
    ]
    order = np.argsort(np.concatenate(places), kind="stable")
    return ("arrow", pa.concat_arrays(arrays).take(pa.array(order)))


def interleave(wire: WireReads, pieces: list[Piece], n: int, arrow_type: pa.DataType) -> Piece:
    """Rows ``i * k + j`` from row ``i`` of ``pieces[j]`` (elements of ``k`` occurrences)."""
    k = len(pieces)
    kinds = {p[0] for p in pieces}
    if kinds == {"num"}:
        return ("num", np.stack([p[1] for p in pieces], axis=1).ravel())
    if kinds == {"bin"}:
        pos = np.stack([p[1] for p in pieces], axis=1).ravel()
        return ("bin", pos, np.stack([p[2] for p in pieces], axis=1).ravel())
    grid = (np.arange(n)[:, None] * k + np.arange(k)[None, :]).T  # occurrence j -> its rows
    return combine(wire, pieces, list(grid), n * k, arrow_type)


def run_program(
    wire: WireReads, program: Program, starts: np.ndarray, ends: np.ndarray
) -> tuple[np.ndarray, Run]:
    """Which messages the program parses, and their values."""
    program.uses += 1
    run = None
    if program.uses >= program.layouts_from:
        run = run_layouts(wire, program, starts, ends)
        if run is None:
            program.layouts_from = program.uses + LAYOUT_RETRY
    if run is None:
        run = Run(np.zeros(starts.shape[0], dtype=bool))
        pos = execute(wire, program.steps, starts, run)
        run.bad |= pos != ends
    ok = ~run.bad
    if run.strings and ok.any():
        check_strings(wire, run.strings, ok)
    return ok, run


def _timestamp(sec: Piece, nanos: Piece, m: int) -> Piece:
    """Microseconds since the epoch from the pieces of a Timestamp's seconds and nanos."""
    if sec[0] == "const" and nanos[0] == "const":
        return ("const", 0)
    micros = sec[1] * 1_000_000 + nanos[1] // 1000
    return ("num", np.full(m, micros, dtype=np.int64) if np.ndim(micros) == 0 else micros)


def assemble(
    wire: WireReads, program: Program, run: Run, ok: np.ndarray, leaves: list[Leaf]
) -> dict[str, Piece]:
    """The column pieces of the messages ``ok`` that ``run`` parsed, one per leaf."""
    everyone = bool(ok.all())
    m = int(ok.sum())

    def sel(a: Any) -> Any:
        return a if everyone or np.ndim(a) == 0 else a[ok]

    def piece(slot: tuple[Any, ...], default: Any, dtype: np.dtype[Any] | None) -> Piece:
        found = run.values.get(slot)
        if found is None:
            return ("const", default)
        st, a, b = found
        if st.action == "varint":
            values = convert_varint(sel(a), st.ftype)
        elif st.action == "fixed":
            values = sel(a) if b is GATHERED else wire.fixed(sel(a), st.dtype)
        else:
            return ("bin", sel(a), sel(b))
        return ("num", values if dtype is None else values.astype(dtype, copy=False))

    int64 = np.dtype(np.int64)
    out: dict[str, Piece] = {}
    for leaf in leaves:
        name = leaf.name
        if leaf.kind == "scalar":
            out[name] = piece(("s", name), leaf.default, NP_DTYPES.get(leaf.arrow_type))
        elif leaf.kind == "timestamp":
            out[name] = _timestamp(piece(("ts", name, 1), 0, int64), piece(("ts", name, 2), 0, int64), m)
        elif leaf.kind == "repeated_scalar":
            out[name] = ("arrow", _repeated_scalar(wire, leaf, program, run, sel, m, piece))
        else:
            out[name] = ("arrow", _repeated_message(wire, leaf, program, m, piece))
    return out


def _repeated_scalar(
    wire: WireReads,
    leaf: Leaf,
    program: Program,
    run: Run,
    sel: Callable[[Any], Any],
    m: int,
    piece: Callable[[tuple[Any, ...], Any, Any], Piece],
) -> pa.Array:
    value_type = leaf.arrow_type.value_type
    dtype = NP_DTYPES.get(value_type)
    packed = run.values.get(("p", leaf.name))
    if packed is not None:
        st, pos, lengths = packed
        lengths = sel(lengths)
        byte_offsets, data = wire.gather_bytes(sel(pos), lengths)
        values = np.frombuffer(data, dtype=st.dtype)
        offsets = (byte_offsets // st.size).astype(np.int32)
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values.astype(dtype), type=value_type))
    k = program.counts.get(leaf.name, 0)
    if k == 0:
        return pa.ListArray.from_arrays(pa.array(np.zeros(m + 1, dtype=np.int32)), pa.array([], value_type))
    pieces = [piece(("r", leaf.name, j), None, dtype) for j in range(k)]
    values_piece = interleave(wire, pieces, m, value_type)
    offsets = pa.array((np.arange(m + 1) * k).astype(np.int32))
    return pa.ListArray.from_arrays(offsets, to_arrow(wire, values_piece, m * k, value_type))


def _repeated_message(
    wire: WireReads,
    leaf: Leaf,
    program: Program,
    m: int,
    piece: Callable[[tuple[Any, ...], Any, Any], Piece],
) -> pa.Array:
    struct_type = leaf.arrow_type.value_type
    k = program.counts.get(leaf.name, 0)
    int64 = np.dtype(np.int64)
    children = []
    for sub, child in zip(leaf.sub_fields, struct_type, strict=True):
        if not k:
            children.append(pa.array([], child.type))
            continue
        if sub.kind in ("repeated_scalar", "repeated_message"):
            # The program has no occurrence of it (see ``Deriver.bind``): empty in every element.
            empty = pa.array(np.zeros(m * k + 1, dtype=np.int32))
            children.append(pa.ListArray.from_arrays(empty, pa.array([], child.type.value_type)))
            continue
        if sub.kind == "timestamp":
            slot = ("elem_ts", leaf.name)
            pieces = [
                _timestamp(
                    piece((*slot, j, sub.name, 1), 0, int64), piece((*slot, j, sub.name, 2), 0, int64), m
                )
                for j in range(k)
            ]
        else:
            pieces = [
                piece(("e", leaf.name, j, sub.name), sub.default, NP_DTYPES.get(child.type)) for j in range(k)
            ]
        children.append(to_arrow(wire, interleave(wire, pieces, m, child.type), m * k, child.type))
    values = pa.StructArray.from_arrays(children, fields=list(struct_type))
    offsets = pa.array((np.arange(m + 1) * k).astype(np.int32))
    return pa.ListArray.from_arrays(offsets, values)
