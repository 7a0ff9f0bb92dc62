"""The vectorised Protobuf decoder gives exactly the values of the upb runtime, message by message."""

from __future__ import annotations

import math
import random
import struct
from datetime import date
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcap.reader import make_reader
from mcap_protobuf.decoder import DecoderFactory
from nuro_ml.etl import proto_execute, proto_schema, schemas
from nuro_ml.etl.generator import generate_interval
from nuro_ml.etl.proto_decode import ProtobufDecoder
from nuro_ml.etl.reader import McapTableReader, infer_schema, plan

F = descriptor_pb2.FieldDescriptorProto
OPT, REP = F.LABEL_OPTIONAL, F.LABEL_REPEATED

# Test schema: every scalar type, nesting, a timestamp, repeated scalars (packed fixed, packed
# varint, unpacked fixed, strings), repeated messages, an open enum and a oneof (proto3), plus a
# proto2 message with explicit defaults and a closed enum.
_SCALARS = [
    ("i32", F.TYPE_INT32),
    ("i64", F.TYPE_INT64),
    ("u32", F.TYPE_UINT32),
    ("u64", F.TYPE_UINT64),
    ("s32", F.TYPE_SINT32),
    ("s64", F.TYPE_SINT64),
    ("flag", F.TYPE_BOOL),
    ("f", F.TYPE_FLOAT),
    ("d", F.TYPE_DOUBLE),
    ("fx32", F.TYPE_FIXED32),
    ("sfx32", F.TYPE_SFIXED32),
    ("fx64", F.TYPE_FIXED64),
    ("sfx64", F.TYPE_SFIXED64),
    ("blob", F.TYPE_BYTES),
    ("frame_id", F.TYPE_STRING),
]


def _field(msg, name, number, ftype, label=OPT, type_name="", **options):
    fd = msg.field.add(name=name, number=number, type=ftype, label=label)
    if type_name:
        fd.type_name = type_name
    for key, value in options.items():
        setattr(fd.options, key, value)
    return fd


def _schema_files() -> descriptor_pb2.FileDescriptorSet:
    ts = descriptor_pb2.FileDescriptorProto()
    timestamp_pb2.DESCRIPTOR.CopyToProto(ts)
    f3 = descriptor_pb2.FileDescriptorProto(
        name="t/m.proto", package="t", syntax="proto3", dependency=[ts.name]
    )
    kind = f3.enum_type.add(name="Kind")
    for name, number in (("K0", 0), ("K1", 1), ("K7", 7)):
        kind.value.add(name=name, number=number)
    inner = f3.message_type.add(name="Inner")
    _field(inner, "x", 1, F.TYPE_DOUBLE)
    _field(inner, "s", 2, F.TYPE_SINT32)
    _field(inner, "label", 3, F.TYPE_STRING)
    _field(inner, "vals", 4, F.TYPE_DOUBLE, REP)
    item = f3.message_type.add(name="Item")
    _field(item, "name", 1, F.TYPE_STRING)
    _field(item, "offset", 2, F.TYPE_FIXED32)
    _field(item, "kind", 3, F.TYPE_ENUM, type_name=".t.Kind")
    _field(item, "delta", 4, F.TYPE_SINT64)
    _field(item, "inner", 5, F.TYPE_MESSAGE, type_name=".t.Inner")
    _field(item, "parts", 6, F.TYPE_MESSAGE, REP, type_name=".t.Inner")
    msg = f3.message_type.add(name="Msg")
    _field(msg, "stamp", 1, F.TYPE_MESSAGE, type_name=".google.protobuf.Timestamp")
    for i, (name, ftype) in enumerate(_SCALARS):
        _field(msg, name, 2 + i, ftype)
    _field(msg, "kind", 20, F.TYPE_ENUM, type_name=".t.Kind")
    _field(msg, "inner", 21, F.TYPE_MESSAGE, type_name=".t.Inner")
    _field(msg, "covariance", 22, F.TYPE_DOUBLE, REP)
    _field(msg, "counts", 23, F.TYPE_INT32, REP)
    _field(msg, "floats", 24, F.TYPE_FLOAT, REP, packed=False)
    _field(msg, "tags", 25, F.TYPE_STRING, REP)
    _field(msg, "items", 26, F.TYPE_MESSAGE, REP, type_name=".t.Item")
    msg.oneof_decl.add(name="choice")
    _field(msg, "a", 27, F.TYPE_DOUBLE).oneof_index = 0
    _field(msg, "b", 28, F.TYPE_STRING).oneof_index = 0

    f2 = descriptor_pb2.FileDescriptorProto(name="t/p2.proto", package="t2", syntax="proto2")
    color = f2.enum_type.add(name="Color")
    for name, number in (("RED", 1), ("BLUE", 2)):
        color.value.add(name=name, number=number)
    sub = f2.message_type.add(name="Sub")
    _field(sub, "v", 1, F.TYPE_INT32).default_value = "3"
    _field(sub, "w", 2, F.TYPE_STRING).default_value = "dflt"
    p2 = f2.message_type.add(name="P2")
    _field(p2, "a", 1, F.TYPE_INT32).default_value = "5"
    _field(p2, "s", 2, F.TYPE_STRING).default_value = "hi"
    _field(p2, "color", 3, F.TYPE_ENUM, type_name=".t2.Color")
    _field(p2, "subs", 4, F.TYPE_MESSAGE, REP, type_name=".t2.Sub")
    _field(p2, "z", 5, F.TYPE_DOUBLE).default_value = "2.5"
    return descriptor_pb2.FileDescriptorSet(file=[ts, f3, f2])


_FDS = _schema_files()
_POOL = descriptor_pool.DescriptorPool()
for _file in _FDS.file:
    _POOL.Add(_file)
Msg = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("t.Msg"))
P2 = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("t2.P2"))
DATA = _FDS.SerializeToString()


def _leaf_value(msg: Any, leaf: Any) -> Any:
    """One column's value of a parsed (upb) message, in the column's Arrow form."""
    obj = msg
    for name in leaf.path:
        obj = getattr(obj, name)
    if leaf.raw_message:
        return (
            [m.SerializeToString() for m in obj]
            if leaf.kind == "repeated_scalar"
            else obj.SerializeToString()
        )
    if leaf.kind == "timestamp":
        return obj.seconds * 1_000_000 + obj.nanos // 1000
    if leaf.kind == "repeated_scalar":
        return list(obj)
    if leaf.kind == "repeated_message":
        return [{sub.name: _leaf_value(item, sub) for sub in leaf.sub_fields} for item in obj]
    if leaf.raw_message:
        return (
            [m.SerializeToString() for m in obj]
            if leaf.kind == "repeated_scalar"
            else obj.SerializeToString()
        )
    if isinstance(obj, int) and leaf.arrow_type == pa.int64() and obj >= 2**63:
        return obj - 2**64  # uint64 / fixed64 columns are int64
    return obj


def _expected(decoder: ProtobufDecoder, payloads: list[bytes]) -> dict[str, list]:
    """Column values as upb parses them, one message at a time."""
    out: dict[str, list] = {leaf.name: [] for leaf in decoder.leaves}
    for payload in payloads:
        msg = decoder.message_class.FromString(payload)
        for leaf in decoder.leaves:
            out[leaf.name].append(_leaf_value(msg, leaf))
    return out


def _pack(payloads: list[bytes], rng: random.Random) -> tuple[bytes, np.ndarray, np.ndarray]:
    """Payloads in one buffer, separated by junk, as message records lie in a chunk."""
    parts, starts, ends, pos = [], [], [], 0
    for payload in payloads:
        junk = bytes(rng.randrange(256) for _ in range(rng.choice((0, 1, 9, 31))))
        parts += [junk, payload]
        pos += len(junk)
        starts.append(pos)
        pos += len(payload)
        ends.append(pos)
    parts.append(bytes(rng.randrange(256) for _ in range(rng.choice((0, 3)))))
    return b"".join(parts), np.array(starts, dtype=np.int64), np.array(ends, dtype=np.int64)


def _same(actual: object, expected: object) -> bool:
    if isinstance(actual, float) and isinstance(expected, float):
        return actual == expected or (math.isnan(actual) and math.isnan(expected))
    if isinstance(actual, list) and isinstance(expected, list):
        return len(actual) == len(expected) and all(
            _same(a, e) for a, e in zip(actual, expected, strict=True)
        )
    if isinstance(actual, dict) and isinstance(expected, dict):
        return actual.keys() == expected.keys() and all(_same(actual[k], expected[k]) for k in actual)
    return actual == expected


def _check(decoder: ProtobufDecoder, payloads: list[bytes], seed: int = 0, columns=None) -> pa.Table:
    buf, starts, ends = _pack(payloads, random.Random(seed))
    table = decoder.decode(buf, starts, ends, columns)
    expected = _expected(decoder, payloads)
    names = [leaf.name for leaf in decoder.leaves if columns is None or leaf.name in columns]
    assert table.column_names == names
    for name in names:
        column = table.column(name)
        assert column.type == decoder.schema.field(name).type, name
        if pa.types.is_timestamp(column.type):
            column = column.cast(pa.int64())
        actual = column.to_pylist()
        for i, (a, e) in enumerate(zip(actual, expected[name], strict=True)):
            assert _same(a, e), (name, i, a, e, payloads[i].hex())
    return table


@pytest.fixture
def slow(monkeypatch):
    """Messages decoded one by one by upb instead of vectorised (count)."""
    seen = [0]
    original = ProtobufDecoder._decode_slow

    def counted(self, buf, starts, ends, leaves):
        seen[0] += len(starts)
        return original(self, buf, starts, ends, leaves)

    monkeypatch.setattr(ProtobufDecoder, "_decode_slow", counted)
    return seen


@pytest.fixture(params=["layouts", "steps"])
def decoder(request, monkeypatch, slow):
    """The decoder, run by layouts (the default) or forced to run programs step by step."""
    if request.param == "steps":
        monkeypatch.setattr(proto_execute, "run_layouts", lambda *args: None)
    return ProtobufDecoder("t.Msg", DATA)


def _varint(value: int) -> bytes:
    value &= 2**64 - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _full(i: int) -> bytes:
    m = Msg(
        frame_id=f"frame{i % 3}",
        i32=-i,
        i64=i * 10**12,
        u32=2**32 - 1 - i,
        u64=i,
        s32=-(2**31),
        s64=2**63 - 1,
    )
    m.stamp.seconds, m.stamp.nanos = 1_700_000_000 + i, (i * 7919) % 10**9
    m.flag, m.kind, m.f, m.d = True, 7, 1.5 + i, -2.25e300
    m.fx32, m.sfx32, m.fx64, m.sfx64, m.blob = 2**32 - 1, -5, 2**63 + i, -(2**63), bytes([i % 256]) * (i % 5)
    m.inner.x, m.inner.s, m.inner.label = 0.5, -3, "é" * (i % 3)
    m.covariance.extend([float(k) for k in range(i % 4)])
    if i % 10 == 9:
        m.counts.extend([-1, 300, i])  # packed varints: left to upb
    m.floats.extend([1.0, -0.0])
    m.tags.extend(["a", "bc"][: i % 3])
    for k in range(2):
        item = m.items.add(name=f"it{k}", offset=4 * k, kind=k, delta=-(10**15))
        item.inner.x = float(k)
    m.a = 3.0
    return m.SerializeToString()


def test_varied_messages_equal_upb(decoder, slow):
    payloads = [_full(i) for i in range(40)]
    payloads += [b"", Msg(b="x").SerializeToString(), Msg(i32=-1).SerializeToString()]
    # Field order other than by number, and unknown fields of every wire type.
    fields = [
        Msg(frame_id="z").SerializeToString(),
        Msg(d=1.0).SerializeToString(),
        Msg(u32=9).SerializeToString(),
    ]
    unknown = [
        _key(99, 0) + _varint(2**63),
        _key(98, 1) + b"\x01" * 8,
        _key(97, 2) + b"\x02ab",
        _key(96, 5) + b"\0" * 4,
    ]
    for i in range(12):
        parts = fields + unknown[: i % 5]
        random.Random(i).shuffle(parts)
        payloads.append(b"".join(parts))
    # Over-long varint encodings, a 10-byte varint with high bits set, a duplicate field (last wins).
    payloads.append(_key(2, 0) + b"\x81\x80\x80\x00")
    payloads.append(_key(2, 0) + b"\xff" * 9 + b"\x7f" + _key(3, 0) + b"\x80" * 9 + b"\x01")
    payloads.append(_key(7, 0) + b"\xfe\xff\xff\xff\x0f" + _key(8, 0) + _varint(2**64 - 1))
    payloads.append(Msg(i32=1).SerializeToString() + Msg(i32=2).SerializeToString())
    payloads.append(Msg(a=1.0).SerializeToString() + Msg(b="won").SerializeToString())
    merged = [Msg(inner={"x": 1.0, "vals": [1.0]}), Msg(inner={"s": 2, "vals": [2.0, 3.0]})]
    payloads.append(b"".join(m.SerializeToString() for m in merged))  # message fields merge
    payloads.append(_key(23, 0) + _varint(5) + _key(23, 0) + _varint(6))  # unpacked packable field
    payloads.append(_key(24, 2) + _varint(8) + struct.pack("<2f", 1.0, 2.0))  # packed, declared unpacked
    _check(decoder, payloads[:40])
    assert slow[0] == 4  # the messages with packed varints
    _check(decoder, payloads)
    _check(decoder, payloads[::-1], seed=1)
    _check(decoder, payloads[:40], seed=2, columns=["frame_id", "items", "stamp", "covariance"])


def test_lists_inside_repeated_messages_are_list_fields(decoder, slow):
    assert ProtobufDecoder("t.Msg", DATA).schema.field("items").type.value_type.field("parts").type == (
        pa.list_(
            pa.struct(
                [
                    ("x", pa.float64()),
                    ("s", pa.int32()),
                    ("label", pa.string()),
                    ("vals", pa.list_(pa.float64())),
                ]
            )
        )
    )
    payloads = [_full(i) for i in range(30)]
    nested = []
    for i in range(9):
        m = Msg(frame_id=f"n{i}")
        for k in range(i % 3 + 1):
            item = m.items.add(name=f"it{k}")
            item.inner.vals.extend([float(j) for j in range((i + k) % 3)])
            for j in range(i % 2 + k % 2):
                item.parts.add(x=float(j), label=f"p{j}", vals=[1.5] * j)
        nested.append(m.SerializeToString())
    payloads[5:5] = nested
    _check(decoder, payloads)
    # Messages with a non-empty list inside an element go to upb; the others run vectorised.
    assert 0 < slow[0] < len(payloads)
    table = _check(decoder, payloads, seed=4, columns=["items"])
    assert table.column("items")[5].as_py()[0]["inner_vals"] == []
    assert any(row["parts"] for row in table.column("items")[6].as_py())


def test_many_messages_of_few_layouts(decoder, slow):
    payloads = [_full(i % 6) for i in range(600)] + [_full(i) for i in range(600, 700) if i % 10 != 9]
    _check(decoder, payloads)
    _check(decoder, payloads, seed=3)  # programs and layouts kept from the first call
    assert slow[0] == 0


def test_open_ended_last_field_must_end_the_message(decoder):
    # The last field of the first message (bytes, then a packed array) runs to its end; in other
    # messages a field follows it, so its length prefix no longer reaches the end.
    tail = Msg(blob=b"abc").SerializeToString()
    followed = Msg(blob=b"ab").SerializeToString() + _key(20, 0) + _varint(1)
    packed = Msg(covariance=[1.0, 2.0]).SerializeToString()
    packed_followed = Msg(covariance=[3.0]).SerializeToString() + _key(25, 2) + b"\x00"
    _check(decoder, [tail, followed, Msg(blob=b"abcdef").SerializeToString(), tail, followed] * 2)
    _check(decoder, [packed, packed_followed, packed, packed_followed], seed=1)


def test_proto2_defaults_and_closed_enum(decoder):
    dec = ProtobufDecoder("t2.P2", DATA)
    sub_only = P2()
    sub_only.subs.add()
    sub_only.subs.add(v=-7, w="")
    payloads = [
        b"",
        P2(a=1, s="x", color=2, z=0.0).SerializeToString(),
        sub_only.SerializeToString(),
        _key(3, 0) + _varint(9),  # not a Color: kept as an unknown field by upb
        _key(3, 0) + _varint(1),
    ] * 3
    table = _check(dec, payloads)
    assert table.column("a").to_pylist()[0] == 5 and table.column("s").to_pylist()[0] == "hi"
    assert table.column("subs").to_pylist()[2] == [{"v": 3, "w": "dflt"}, {"v": -7, "w": ""}]


def test_invalid_utf8_string_fails_like_upb(decoder):
    bad = _key(16, 2) + b"\x02\xc3\x28"  # frame_id, proto3 string
    with pytest.raises(DecodeError):
        Msg.FromString(bad)
    buf, starts, ends = _pack([_full(1), bad, _full(2)], random.Random(0))
    with pytest.raises(DecodeError):
        decoder.decode(buf, starts, ends)


def test_truncated_and_malformed_messages_fail_like_upb(decoder):
    good = _full(3)
    cases = [
        (good, bad) for bad in (good[:-1], good + b"\x08", _key(2, 0) + b"\xff" * 11, _key(16, 2) + b"\x05ab")
    ]
    # A packed array whose length is not a multiple of its element size.
    cases.append((_key(22, 2) + b"\x08" + b"\0" * 8, _key(22, 2) + b"\x07" + b"\0" * 7))
    for first, bad in cases:
        with pytest.raises(DecodeError):
            Msg.FromString(bad)
        buf, starts, ends = _pack([first, first, bad], random.Random(0))
        with pytest.raises(DecodeError):
            decoder.decode(buf, starts, ends)


_LIMITS = {
    "i32": (-(2**31), 2**31 - 1),
    "i64": (-(2**63), 2**63 - 1),
    "u32": (0, 2**32 - 1),
    "u64": (0, 2**64 - 1),
    "s32": (-(2**31), 2**31 - 1),
    "s64": (-(2**63), 2**63 - 1),
    "fx32": (0, 2**32 - 1),
    "sfx32": (-(2**31), 2**31 - 1),
    "fx64": (0, 2**64 - 1),
    "sfx64": (-(2**63), 2**63 - 1),
}


@st.composite
def _message(draw, present: frozenset) -> bytes:
    m = Msg()
    for name, (lo, hi) in _LIMITS.items():
        if name in present:
            setattr(m, name, draw(st.one_of(st.integers(lo, hi), st.sampled_from([0, lo, hi]))))
    if "stamp" in present:
        m.stamp.seconds = draw(st.integers(-(2**40), 2**40))
        m.stamp.nanos = draw(st.integers(0, 10**9 - 1))
    if "flag" in present:
        m.flag = draw(st.booleans())
    if "f" in present:
        m.f = draw(st.floats(width=32))
    if "d" in present:
        m.d = draw(st.floats())
    if "frame_id" in present:
        m.frame_id = draw(st.text(max_size=6))
    if "blob" in present:
        m.blob = draw(st.binary(max_size=300))
    if "kind" in present:
        m.kind = draw(st.integers(-5, 10))
    if "inner" in present:
        m.inner.x = draw(st.floats(allow_nan=False))
        m.inner.s = draw(st.integers(-(2**31), 2**31 - 1))
    if "covariance" in present:
        m.covariance.extend(draw(st.lists(st.floats(), max_size=9)))
    if "counts" in present:
        m.counts.extend(draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=3)))
    if "tags" in present:
        m.tags.extend(draw(st.lists(st.text(max_size=3), max_size=3)))
    if "items" in present:
        for _ in range(draw(st.integers(0, 3))):
            m.items.add(name=draw(st.text(max_size=3)), offset=draw(st.integers(0, 2**32 - 1)), kind=1)
    payload = m.SerializeToString()
    if draw(st.integers(0, 9)) == 0:  # an unknown field at the front or the back
        extra = _key(1000, 0) + _varint(draw(st.integers(0, 2**64 - 1)))
        payload = extra + payload if draw(st.booleans()) else payload + extra
    return payload


_FIELDS = [
    *_LIMITS,
    "stamp",
    "flag",
    "f",
    "d",
    "frame_id",
    "blob",
    "kind",
    "inner",
    "covariance",
    "counts",
    "tags",
    "items",
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.data(),
    shapes=st.lists(st.frozensets(st.sampled_from(_FIELDS)), min_size=1, max_size=3),
    seed=st.integers(0, 100),
)
def test_random_messages_equal_upb(decoder, data, shapes, seed):
    payloads = [data.draw(_message(shapes[i % len(shapes)])) for i in range(data.draw(st.integers(1, 40)))]
    _check(decoder, payloads, seed)


@pytest.fixture(scope="module")
def protobuf_drive(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    [path] = generate_interval(
        root,
        [date(2024, 5, 1)],
        ["veh-001"],
        drive_seconds=4,
        seed=11,
        encoding="protobuf",
        lidar_points=256,
        image_bytes=2048,
        chunk_size=64 << 10,
    )
    return str(path)


@pytest.mark.parametrize("topic", sorted(schemas.TOPICS))
def test_every_column_of_generated_topics_equals_upstream(protobuf_drive, topic):
    schema = infer_schema([protobuf_drive], {topic})
    reader = McapTableReader({topic}, schema)
    table = pa.Table.from_batches(
        [b for part in plan([protobuf_drive], {topic}) for b in reader.read(part)], schema=schema
    )
    with open(protobuf_drive, "rb") as fh:
        ref = [
            (m.log_time, d)
            for _, _, m, d in make_reader(fh, decoder_factories=[DecoderFactory()]).iter_decoded_messages(
                topics=[topic], log_time_order=False
            )
        ]
    assert table.num_rows == len(ref) > 0
    assert table.column("log_time_ns").to_pylist() == [t for t, _ in ref]
    leaves = proto_schema.leaves(ref[0][1].DESCRIPTOR)
    for leaf in leaves:
        expected = [_leaf_value(msg, leaf) for _, msg in ref]
        column = table.column(leaf.name)
        if pa.types.is_timestamp(column.type):
            column = column.cast(pa.int64())
        assert column.to_pylist() == expected, leaf.name


def _tree_schema() -> bytes:
    """A recursive message (a tree of nodes), deeper than the columns go."""
    f3 = descriptor_pb2.FileDescriptorProto(name="t/tree.proto", package="tree", syntax="proto3")
    node = f3.message_type.add(name="Node")
    _field(node, "value", 1, F.TYPE_DOUBLE)
    _field(node, "child", 2, F.TYPE_MESSAGE, type_name=".tree.Node")
    _field(node, "leaves", 3, F.TYPE_MESSAGE, REP, type_name=".tree.Node")
    _field(node, "name", 4, F.TYPE_STRING)
    return descriptor_pb2.FileDescriptorSet(file=[f3]).SerializeToString()


def test_messages_past_the_depth_limit_are_kept_whole(decoder, slow):
    data = _tree_schema()
    tree = ProtobufDecoder("tree.Node", data)
    # The root is depth 0: the chain of children is flattened MAX_DEPTH levels down, and the next
    # child is a binary column of its serialized subtree; lists of nodes that deep are list<binary>.
    deep = "_".join(["child"] * (proto_schema.MAX_DEPTH + 1))
    assert tree.schema.field(f"{deep.rsplit('_', 1)[0]}_value").type == pa.float64()
    assert tree.schema.field(deep).type == pa.binary()
    assert tree.schema.field(f"{deep.rsplit('_', 1)[0]}_leaves").type == pa.list_(pa.binary())
    Node = tree.message_class

    def chain(depth: int, i: int) -> Any:
        root = node = Node(value=float(i), name=f"n{i}")
        for level in range(depth):
            node = node.child
            node.value, node.name = float(i * 100 + level), f"d{level}"
            for k in range(level % 3):
                node.leaves.add(value=float(k), name=f"leaf{k}").child.value = -1.0
        return root

    payloads = [chain(depth, i).SerializeToString() for i, depth in enumerate([0, 3, 6, 7, 9, 12] * 3)]
    # Vectorised (or step by step, by the decoder fixture's mode) and upb give the same values.
    table = _check(ProtobufDecoder("tree.Node", data), payloads)
    assert slow[0] == 0  # kept-whole messages are read as bytes fields, without upb
    # What the limit keeps is the rest of the tree, whole: it parses back to the original subtree.
    for payload, kept in zip(payloads, table.column(deep).to_pylist(), strict=True):
        original = Node.FromString(payload)
        for _ in range(proto_schema.MAX_DEPTH + 1):
            original = original.child
        assert Node.FromString(kept) == original
