"""Lists inside lists of messages (CDR sequences of messages holding sequences) become nested
list columns with the upstream decoder's values."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory as Ros2DecoderFactory
from mcap_ros2.writer import Writer
from nuro_ml.etl import reader
from nuro_ml.etl.ros2_decode import Leaf, Ros2Decoder, _micros

SCENE = "test_msgs/msg/Scene"
SCENE_DEF = """string name
Entity[] entities
float64[3] origin
================================================================================
MSG: test_msgs/Entity
string id
float64[] values
Part[] parts
builtin_interfaces/Time stamp
================================================================================
MSG: test_msgs/Part
float32 x
int32[] ids
string[] tags
================================================================================
MSG: builtin_interfaces/Time
int32 sec
uint32 nanosec
"""


def _scene(i: int) -> dict[str, Any]:
    entities = []
    for k in range(i % 4):
        parts = [
            {"x": float(j) / 2, "ids": list(range(i % 3 + j)), "tags": [f"t{j}"] * (j % 2)}
            for j in range((i + k) % 3)
        ]
        entities.append(
            {
                "id": f"e{i}.{k}",
                "values": [float(k)] * ((i + k) % 4),
                "parts": parts,
                "stamp": {"sec": 1_700_000_000 + i, "nanosec": 1000 * k + 7},
            }
        )
    return {"name": f"scene{i}", "entities": entities, "origin": [1.0, 2.0, float(i)]}


def _expected(value: Any, leaf: Leaf) -> Any:
    """A leaf's value in an upstream-decoded message, in the column's form (times in microseconds)."""
    for name in leaf.path:
        value = getattr(value, name)
    if leaf.kind == "timestamp":
        return value.sec * 1_000_000 + value.nanosec // 1000
    if leaf.kind == "structs":
        return [{el.name: _expected(item, el) for el in leaf.inner} for item in value]
    if leaf.kind == "binary":
        return bytes(value)
    return list(value) if isinstance(value, list | tuple) else value


def test_sequences_inside_sequences_of_messages_equal_upstream(tmp_path):
    path = tmp_path / "scenes.mcap"
    with open(path, "wb") as fh:
        writer = Writer(fh, chunk_size=4 << 10)
        schema = writer.register_msgdef(SCENE, SCENE_DEF)
        for i in range(60):
            writer.write_message("/scene", schema, _scene(i), log_time=i, publish_time=i)
        writer.finish()
    decoder = Ros2Decoder(SCENE, SCENE_DEF)
    entities = decoder.schema.field("entities").type.value_type
    assert entities.field("parts").type.value_type.field("ids").type == pa.list_(pa.int32())
    assert entities.field("values").type == pa.list_(pa.float64())

    parts = [table for topic, table in reader.decode_file(str(path)) if topic == "/scene"]
    table = pa.concat_tables(parts)
    with open(path, "rb") as fh:
        upstream = make_reader(fh, decoder_factories=[Ros2DecoderFactory()])
        ref = [msg for _, _, _, msg in upstream.iter_decoded_messages(log_time_order=False)]
    assert table.num_rows == len(ref) == 60
    for leaf in decoder.leaves:
        column = table.column(leaf.name).cast(_micros(decoder.schema.field(leaf.name).type))
        assert column.to_pylist() == [_expected(msg, leaf) for msg in ref], leaf.name
    assert any(row for row in table.column("entities").to_pylist() if any(e["parts"] for e in row))
