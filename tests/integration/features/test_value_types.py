"""Every Feast 0.67 value type through the Redis fast writer, against Feast's own write and read.

One feature view holds one feature of each value type (``feast/value_type.py``). The same Arrow
rows are written twice: by our :class:`RedisArrowWriter` into one Redis database and by Feast's
provider (``online_write_batch``) into another. Per type, the stored bytes must be identical, Feast's
own ``get_online_features`` must read back the same values from both, and our fast reader must
return what Feast's read returns.
"""

from __future__ import annotations

import decimal
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
import pytest
import redis
from nuro_ml.features import redis_format as fmt
from nuro_ml.features.writers import EVENT_TS, RedisArrowWriter
from nuro_ml.hooks.feast import FeastHook

from tests.fixtures.services import RedisServer

pytestmark = pytest.mark.integration

OURS_DB, FEAST_DB = 13, 14
T0 = datetime(2026, 3, 1, 8, tzinfo=UTC)
U1 = uuid.UUID("12345678-1234-5678-1234-567812345678")
U2 = uuid.UUID("87654321-4321-8765-4321-876543218765")
TU = uuid.UUID("6ba7b810-9dad-11d1-80b4-00c04fd430c8")  # a version-1 (time) UUID
ZONED = datetime(2026, 3, 1, 9, 30, tzinfo=timezone(timedelta(hours=2)))

# value type -> (Arrow type, values of rows 0..2; row 2 is null where the type allows it)
SAMPLES: dict[str, tuple[pa.DataType, list[Any]]] = {
    "BYTES": (pa.binary(), [b"\x00\x01ab", b"", None]),
    "STRING": (pa.string(), ["héllo", "", None]),
    "INT32": (pa.int32(), [-5, 2**31 - 1, None]),
    "INT64": (pa.int64(), [-(2**40), 7, None]),
    "DOUBLE": (pa.float64(), [1.5, -0.0, None]),
    "FLOAT": (pa.float32(), [0.25, 3.0, None]),
    "BOOL": (pa.bool_(), [True, False, None]),
    "UNIX_TIMESTAMP": (pa.timestamp("us", tz="UTC"), [T0, T0 + timedelta(seconds=1), None]),
    "BYTES_LIST": (pa.list_(pa.binary()), [[b"a", b"\xff"], [], None]),
    "STRING_LIST": (pa.list_(pa.string()), [["a", "b"], [], None]),
    "INT32_LIST": (pa.list_(pa.int32()), [[1, -2], [], None]),
    "INT64_LIST": (pa.list_(pa.int64()), [[2**40, -1], [], None]),
    "DOUBLE_LIST": (pa.list_(pa.float64()), [[1.5, 2.5], [], None]),
    "FLOAT_LIST": (pa.list_(pa.float32()), [[0.5], [], None]),
    "BOOL_LIST": (pa.list_(pa.bool_()), [[True, False], [], None]),
    "UNIX_TIMESTAMP_LIST": (pa.list_(pa.timestamp("us", tz="UTC")), [[T0], [], None]),
    # Maps as Parquet written from Python dicts holds them (and as Feast's offline store reads them).
    "MAP": (pa.struct([("vehicle", pa.string())]), [{"vehicle": "sedan"}, {"vehicle": None}, None]),
    "MAP_LIST": (pa.list_(pa.struct([("a", pa.string())])), [[{"a": "1"}, {"a": "2"}], [], None]),
    "BYTES_SET": (pa.list_(pa.binary()), [[b"a", b"b"], [], None]),
    "STRING_SET": (pa.list_(pa.string()), [["x", "y"], [], None]),
    "INT32_SET": (pa.list_(pa.int32()), [[3, 1], [], None]),
    "INT64_SET": (pa.list_(pa.int64()), [[5, 9], [], None]),
    "DOUBLE_SET": (pa.list_(pa.float64()), [[0.5, 1.5], [], None]),
    "FLOAT_SET": (pa.list_(pa.float32()), [[0.5], [], None]),
    "BOOL_SET": (pa.list_(pa.bool_()), [[True], [], None]),
    "UNIX_TIMESTAMP_SET": (pa.list_(pa.timestamp("us", tz="UTC")), [[T0], [], None]),
    "PDF_BYTES": (pa.binary(), [b"%PDF-1.7 ...", b"%PDF", None]),
    "IMAGE_BYTES": (pa.binary(), [b"\x89PNG\r\n", b"\xff\xd8", None]),
    "JSON": (pa.large_string(), ['{"max_km": 74, "zones": ["n"]}', "[1, 2]", None]),
    "JSON_LIST": (pa.list_(pa.large_string()), [['{"a": 1}', "2"], [], None]),
    "STRUCT": (
        pa.struct([("name", pa.string()), ("age", pa.string())]),
        [{"name": "d", "age": "3"}, None, None],
    ),
    "STRUCT_LIST": (
        pa.list_(pa.struct([("name", pa.string()), ("age", pa.string())])),
        [[{"name": "d", "age": "3"}], [], None],
    ),
    "UUID": (pa.string(), [str(U1), str(U2), None]),
    "TIME_UUID": (pa.string(), [str(TU), str(TU), None]),
    "UUID_LIST": (pa.list_(pa.string()), [[str(U1), str(U2)], [], None]),
    "TIME_UUID_LIST": (pa.list_(pa.string()), [[str(TU)], [], None]),
    "UUID_SET": (pa.list_(pa.string()), [[str(U1)], [], None]),
    "TIME_UUID_SET": (pa.list_(pa.string()), [[str(TU)], [], None]),
    "VALUE_LIST": (pa.list_(pa.list_(pa.string())), [[["a", "b"], ["c"]], [], None]),
    "VALUE_SET": (pa.list_(pa.list_(pa.string())), [[["a"], ["b"]], [], None]),
    "DECIMAL": (pa.string(), [str(decimal.Decimal("1.25")), "-0.001", None]),
    "DECIMAL_LIST": (pa.list_(pa.string()), [["1.5", "2"], [], None]),
    "DECIMAL_SET": (pa.list_(pa.string()), [["3.25"], [], None]),
    "SCALAR_MAP": (pa.map_(pa.int64(), pa.string()), [{1: "a", 2: "b"}, {}, None]),
    # An Arrow column holds one zone; a zoned timestamp keeps it.
    "ZONED_TIMESTAMP": (pa.timestamp("us", tz="+02:00"), [ZONED, ZONED + timedelta(hours=1), None]),
}
ENTITIES = ["e0", "e1", "e2"]


def _dtype_source(value_type: str) -> str:
    """The Feast type of a feature of ``value_type``, as repository source code."""
    if value_type == "STRUCT":
        return 'Struct({"name": String, "age": String})'
    if value_type == "STRUCT_LIST":
        return 'Array(Struct({"name": String, "age": String}))'
    return f"from_value_type(ValueType.{value_type})"


def test_every_value_type_is_covered() -> None:
    assert set(SAMPLES) == fmt.feature_value_types()


REPO = """
from datetime import timedelta
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Array, String, Struct, from_value_type

thing = Entity(name="thing", join_keys=["thing_id"], value_type=ValueType.STRING)
source = FileSource(name="things", path="things.parquet", timestamp_field="event_ts")
all_types = FeatureView(
    name="all_types",
    entities=[thing],
    ttl=timedelta(0),
    schema=[
        Field(name="thing_id", dtype=String),
FIELDS
    ],
    source=source,
)
""".replace(
    "FIELDS", "\n".join(f'        Field(name="{vt.lower()}", dtype={_dtype_source(vt)}),' for vt in SAMPLES)
)


def _feast_write(hook: FeastHook, view: Any) -> None:
    """Feast's own write: its value converter on the Python values, then ``online_write_batch``."""
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.type_map import python_values_to_proto_values
    from feast.value_type import ValueType

    protos = {
        vt.lower(): python_values_to_proto_values(values, ValueType[vt])
        for vt, (_, values) in SAMPLES.items()
    }
    rows = [
        (
            EntityKey(join_keys=["thing_id"], entity_values=[Value(string_val=entity)]),
            {name: values[i] for name, values in protos.items()},
            T0,
            None,
        )
        for i, entity in enumerate(ENTITIES)
    ]
    store = hook.store
    store._get_provider().online_write_batch(store.config, view, rows, None)


@pytest.fixture(scope="module")
def written(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The rows written by both writers; yields the hooks and the Redis dumps."""
    repo = tmp_path_factory.mktemp("types_repo")
    (repo / "types.py").write_text(REPO)
    (repo / "feature_store.yaml").write_text(
        "project: types\nprovider: local\nregistry: data/registry.db\n"
        "online_store:\n  type: sqlite\nentity_key_serialization_version: 3\n"
    )
    clients = {
        db: redis.Redis(host=redis_server.host, port=redis_server.port, db=db) for db in (OURS_DB, FEAST_DB)
    }
    for client in clients.values():
        client.flushdb()
    hooks = {
        db: FeastHook(
            feast_conn_id=None,
            repo_path=repo,
            online_store="redis",
            redis_connection_string=f"{redis_server.connection_string},db={db}",
        )
        for db in (OURS_DB, FEAST_DB)
    }
    hooks[OURS_DB].apply()
    view = hooks[OURS_DB].store.get_feature_view("all_types")
    columns = {vt.lower(): pa.array(values, type=arrow) for vt, (arrow, values) in SAMPLES.items()}
    table = pa.table(
        {
            "thing_id": pa.array(ENTITIES),
            **columns,
            EVENT_TS: pa.array([T0] * 3, pa.timestamp("us", tz="UTC")),
        }
    )
    ours = hooks[OURS_DB].writer()
    assert isinstance(ours, RedisArrowWriter) and ours.unsupported(view) is None
    assert ours.write([view], table)["all_types"].rows == 3
    ours.close()
    _feast_write(hooks[FEAST_DB], view)
    dumps = {db: {k: c.hgetall(k) for k in c.scan_iter()} for db, c in clients.items()}
    reader = hooks[OURS_DB].online_reader()
    yield {"hooks": hooks, "dumps": dumps, "view": view, "reader": reader}
    reader.close()
    for client in clients.values():
        client.flushdb()
        client.close()
    for hook in hooks.values():
        hook.close()


@pytest.mark.parametrize("value_type", sorted(SAMPLES))
def test_value_type_is_written_as_feast_writes_it_and_reads_back(
    written: dict[str, Any], value_type: str
) -> None:
    feature = value_type.lower()
    field = fmt.field_hash("all_types", feature)
    ours, feast = written["dumps"][OURS_DB], written["dumps"][FEAST_DB]
    assert ours.keys() == feast.keys() and len(ours) == len(ENTITIES)
    for key in feast:
        assert ours[key].get(field) == feast[key].get(field), (value_type, key)
    rows = [{"thing_id": e} for e in ENTITIES]
    reads = [
        hook.store.get_online_features(features=[f"all_types:{feature}"], entity_rows=rows).to_dict()[feature]
        for hook in written["hooks"].values()
    ]
    assert reads[0] == reads[1]
    assert reads[0][0] is not None  # a real value, not two empty reads
    # The fast reader decodes what it reads exactly as Feast's online read does.
    fast = written["reader"].get_online_features(features=[f"all_types:{feature}"], entity_rows=rows)
    assert fast[feature] == reads[0]
