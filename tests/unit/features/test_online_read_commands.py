"""The fast reader's HMGET commands must name exactly the keys and fields Feast's Redis store uses."""

from __future__ import annotations

from datetime import timedelta

import pytest
from feast import Entity, FeatureView, Field, FileSource
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.types import Float64, Int64, String
from hypothesis import given, settings
from hypothesis import strategies as st
from nuro_ml.exceptions import FeatureStoreError
from nuro_ml.features.online_read import FastOnlineReader, _string_key_commands
from nuro_ml.features.redis_format import resp_command
from nuro_ml.features.resp import RedisEndpoint

_SOURCE = FileSource(name="src", path="unused.parquet", timestamp_field="ts")
_VIEW = FeatureView(
    name="ego",
    entities=[Entity(name="scene", join_keys=["scene_id"])],
    ttl=timedelta(days=1),
    schema=[
        Field(name="scene_id", dtype=String),
        Field(name="speed", dtype=Float64),
        Field(name="frames", dtype=Int64),
    ],
    source=_SOURCE,
)


def _reader(project: str) -> FastOnlineReader:
    # Never connects: only plans and encodes.
    return FastOnlineReader(RedisEndpoint("127.0.0.1", 1), project=project, views={"ego": _VIEW}, services={})


@given(st.lists(st.text(max_size=40), min_size=1, max_size=8), st.sampled_from(["nuro_ml", "p", "prój"]))
@settings(max_examples=60, deadline=None)
def test_commands_match_feast_keys_and_fields(scene_ids: list[str], project: str) -> None:
    reader = _reader(project)
    plan = reader._plan(["ego:frames", "ego:speed"], False)
    parts: list[bytes] = []
    _string_key_commands(plan.groups[0], scene_ids, parts)
    fields = [bytes(_mmh3("ego:frames")), bytes(_mmh3("ego:speed"))]
    expected = [
        resp_command(
            b"HMGET",
            serialize_entity_key(EntityKey(join_keys=["scene_id"], entity_values=[Value(string_val=s)]), 3)
            + project.encode(),
            *fields,
        )
        for s in scene_ids
    ]
    assert b"".join(parts) == b"".join(expected)
    assert plan.columns == ("frames", "speed")


def test_a_non_string_value_for_a_string_key_names_the_key() -> None:
    with pytest.raises(FeatureStoreError, match=r"Join key 'scene_id' is a STRING; entity value 7 is a int"):
        _reader("p").get_online_features(features=["ego:speed"], entity_rows=[{"scene_id": 7}])
