"""The Arrow encoders must produce exactly the bytes Feast's own Redis store writes."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st
from nuro_ml.features import redis_format as fmt

_int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@given(st.lists(st.text(min_size=0, max_size=30), min_size=1, max_size=20))
@settings(max_examples=60, deadline=None)
def test_string_entity_keys_match_feast(values: list[str]) -> None:
    ours = fmt.entity_keys({"scene_id": pa.array(values, pa.string())}, {"scene_id": "STRING"}, "proj")
    theirs = [
        serialize_entity_key(EntityKey(join_keys=["scene_id"], entity_values=[Value(string_val=v)]), 3)
        + b"proj"
        for v in values
    ]
    assert ours == theirs


@given(st.lists(st.tuples(st.text(max_size=12), _int64), min_size=1, max_size=10))
@settings(max_examples=40, deadline=None)
def test_composite_entity_keys_match_feast(rows: list[tuple[str, int]]) -> None:
    ours = fmt.entity_keys(
        {"vehicle_id": pa.array([r[0] for r in rows]), "drive": pa.array([r[1] for r in rows], pa.int64())},
        {"vehicle_id": "STRING", "drive": "INT64"},
        "nuro_ml",
    )
    theirs = [
        serialize_entity_key(
            EntityKey(
                join_keys=["vehicle_id", "drive"], entity_values=[Value(string_val=s), Value(int64_val=i)]
            ),
            3,
        )
        + b"nuro_ml"
        for s, i in rows
    ]
    assert ours == theirs


def _feast_bytes(values: list, value_type: ValueType) -> list[bytes]:
    return [p.SerializeToString() for p in python_values_to_proto_values(values, value_type)]


@given(
    st.lists(st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)), min_size=1, max_size=50)
)
@settings(max_examples=60, deadline=None)
def test_double_values_match_feast(values: list[float | None]) -> None:
    array = pa.array(values, pa.float64())
    assert fmt.encode_values(array, "DOUBLE") == _feast_bytes(
        array.to_numpy(zero_copy_only=False), ValueType.DOUBLE
    )


@given(st.lists(_int64, min_size=1, max_size=50))
@settings(max_examples=60, deadline=None)
def test_int64_values_match_feast(values: list[int]) -> None:
    array = pa.array(values, pa.int64())
    assert fmt.encode_values(array, "INT64") == _feast_bytes(array.to_numpy(), ValueType.INT64)


def test_nullable_ints_strings_and_bools_match_feast() -> None:
    ints = pa.array([3, None, 0, -7], pa.int64())
    assert fmt.encode_values(ints, "INT64") == _feast_bytes(
        ints.to_numpy(zero_copy_only=False), ValueType.INT64
    )
    strings = pa.array(["a", None, "", "ünï"], pa.string())
    assert fmt.encode_values(strings, "STRING") == _feast_bytes(
        strings.to_numpy(zero_copy_only=False), ValueType.STRING
    )
    bools = pa.array([True, False, True])
    assert fmt.encode_values(bools, "BOOL") == _feast_bytes(
        bools.to_numpy(zero_copy_only=False), ValueType.BOOL
    )


@given(st.lists(st.integers(min_value=-(10**15), max_value=4 * 10**15), min_size=1, max_size=30))
@settings(max_examples=60, deadline=None)
def test_timestamps_match_protobuf_and_decode_back(micros: list[int]) -> None:
    encoded = fmt.encode_timestamps(np.array(micros, dtype=np.int64))
    for us, raw in zip(micros, encoded, strict=True):
        ts = Timestamp()
        ts.FromDatetime(datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us))
        assert raw == ts.SerializeToString()
        assert fmt.decode_timestamp_nanos(raw) == us * 1000


def test_decoders_return_what_feast_returns() -> None:
    assert fmt.decoder_for("DOUBLE")(Value(double_val=2.5).SerializeToString()) == 2.5
    assert fmt.decoder_for("DOUBLE")(b"") is None
    assert fmt.decoder_for("DOUBLE")(None) is None
    assert fmt.decoder_for("INT64")(Value(int64_val=-42).SerializeToString()) == -42
    assert fmt.decoder_for("INT32")(Value(int32_val=-5).SerializeToString()) == -5
    assert fmt.decoder_for("STRING")(Value(string_val="veh01").SerializeToString()) == "veh01"
    assert fmt.decoder_for("BOOL")(Value(bool_val=False).SerializeToString()) is False
    assert fmt.decoder_for("FLOAT")(Value(float_val=1.5).SerializeToString()) == 1.5
    # A value written under another type still decodes (through protobuf), never garbles.
    assert fmt.decoder_for("DOUBLE")(Value(int64_val=7).SerializeToString()) == 7
    assert math.isnan(fmt.decoder_for("DOUBLE")(Value(double_val=float("nan")).SerializeToString()))


def test_field_hash_is_feasts_mmh3() -> None:
    assert fmt.field_hash("scene_ego_motion", "speed_mean_mps") == _mmh3("scene_ego_motion:speed_mean_mps")
    assert fmt.ts_field("scene_ego_motion") == b"_ts:scene_ego_motion"
