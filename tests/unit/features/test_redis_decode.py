"""Column decoders must answer exactly what Feast's own Value decoding answers, value for value."""

from __future__ import annotations

import math
from typing import Any

import pytest
from feast.protos.feast.types.Value_pb2 import Value
from feast.type_map import feast_value_type_to_python_type
from hypothesis import given, settings
from hypothesis import strategies as st
from nuro_ml.features.redis_decode import VECTOR_MIN, column_decoder_for

_int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_int32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)


def _feast(raws: list[bytes | None]) -> list[Any]:
    # A field missing from the hash reads as None in Feast too.
    return [None if r is None else feast_value_type_to_python_type(Value.FromString(r)) for r in raws]


def _same(ours: list[Any], theirs: list[Any]) -> bool:
    if len(ours) != len(theirs):
        return False
    for a, b in zip(ours, theirs, strict=True):
        if type(a) is not type(b):
            return False
        if isinstance(a, float) and math.isnan(a):
            if not math.isnan(b):
                return False
        elif a != b or (isinstance(a, float) and math.copysign(1, a) != math.copysign(1, b)):
            return False
    return True


def _values(field: str, values: list[Any]) -> list[bytes | None]:
    return [Value(**{field: v}).SerializeToString() for v in values]


@pytest.mark.parametrize(
    ("value_type", "field", "values"),
    [
        ("DOUBLE", "double_val", [0.0, -0.0, 1.5, -2.25e300, float("inf"), float("nan"), 5e-324] * 3),
        ("FLOAT", "float_val", [0.0, -0.0, 1.5, 3.4e38, float("-inf"), float("nan"), 1e-45] * 3),
        ("INT64", "int64_val", list(range(100, 100 + VECTOR_MIN))),  # one varint byte each
        ("INT64", "int64_val", [2**14 + i for i in range(VECTOR_MIN)]),  # three bytes each
        ("INT64", "int64_val", [-1, -(2**63), -5, -(2**40)] * 4),  # ten bytes each
        ("INT64", "int64_val", [2**62 + i for i in range(VECTOR_MIN)]),  # nine bytes each
        ("INT32", "int32_val", [-1, -(2**31), -7] * 5),
        ("INT32", "int32_val", [2**30 + i for i in range(VECTOR_MIN)]),
        ("INT32", "int32_val", [2**20 + i for i in range(VECTOR_MIN)]),
        ("BOOL", "bool_val", [True, False, True, True] * 4),
        ("STRING", "string_val", ["veh01", "", "ünï", "x" * 300] * 4),
    ],
)
def test_whole_columns_decode_like_feast(value_type: str, field: str, values: list[Any]) -> None:
    raws = _values(field, values)
    assert len(raws) >= VECTOR_MIN
    assert _same(column_decoder_for(value_type)(tuple(raws)), _feast(raws))


def _stored(value_type: str) -> st.SearchStrategy[bytes | None]:
    """What a field of this type can hold: its own values, nothing, an empty Value, or another type."""
    own = {
        "DOUBLE": st.floats().map(lambda v: Value(double_val=v)),
        "FLOAT": st.floats(width=32).map(lambda v: Value(float_val=v)),
        "INT64": _int64.map(lambda v: Value(int64_val=v)),
        "INT32": _int32.map(lambda v: Value(int32_val=v)),
        "BOOL": st.booleans().map(lambda v: Value(bool_val=v)),
    }[value_type]
    foreign = st.one_of(
        st.floats(allow_nan=False).map(lambda v: Value(double_val=v)),
        _int64.map(lambda v: Value(int64_val=v)),
        _int32.map(lambda v: Value(int32_val=v)),
        st.text(max_size=8).map(lambda v: Value(string_val=v)),
        st.booleans().map(lambda v: Value(bool_val=v)),
    )
    return st.one_of(
        own.map(lambda v: v.SerializeToString()),
        own.map(lambda v: v.SerializeToString()),
        foreign.map(lambda v: v.SerializeToString()),
        st.just(b""),
        st.none(),
    )


@pytest.mark.parametrize("value_type", ["DOUBLE", "FLOAT", "INT64", "INT32", "BOOL"])
@given(data=st.data())
@settings(max_examples=60, deadline=None)
def test_mixed_columns_decode_like_feast(value_type: str, data: st.DataObject) -> None:
    raws = data.draw(st.lists(_stored(value_type), min_size=0, max_size=3 * VECTOR_MIN))
    assert _same(column_decoder_for(value_type)(tuple(raws)), _feast(raws))


@pytest.mark.parametrize(
    ("value_type", "field", "strategy"),
    [
        ("DOUBLE", "double_val", st.floats()),
        ("FLOAT", "float_val", st.floats(width=32)),
        ("INT64", "int64_val", _int64),
        ("INT64", "int64_val", st.integers(min_value=0, max_value=2**21)),
        ("INT32", "int32_val", _int32),
        ("INT32", "int32_val", st.integers(min_value=0, max_value=300)),
    ],
)
@given(data=st.data())
@settings(max_examples=40, deadline=None)
def test_columns_of_one_type_decode_like_feast(
    value_type: str, field: str, strategy: st.SearchStrategy[Any], data: st.DataObject
) -> None:
    values = data.draw(st.lists(strategy, min_size=VECTOR_MIN, max_size=4 * VECTOR_MIN))
    raws = _values(field, values)
    assert _same(column_decoder_for(value_type)(tuple(raws)), _feast(raws))


def test_a_value_holding_two_fields_is_not_misread() -> None:
    # Same width and tag as its neighbours, but the oneof is set twice: the last one wins.
    ints = _values("int64_val", [2**14 + i for i in range(VECTOR_MIN)])  # tag + three varint bytes
    ints[2] = b"\x20\x05\x20\x07"
    strings = _values("string_val", ["ab"] * VECTOR_MIN)
    strings[1] = b"\x12\x00\x12\x01z"
    bools = _values("bool_val", [True] * VECTOR_MIN)
    bools[3] = b"\x38\x01\x38\x00"
    assert _same(column_decoder_for("INT64")(tuple(ints)), _feast(ints))
    assert column_decoder_for("INT64")(tuple(ints))[2] == 7
    assert _same(column_decoder_for("STRING")(tuple(strings)), _feast(strings))
    assert _same(column_decoder_for("BOOL")(tuple(bools)), _feast(bools))
