"""Random bytes and truncated drive logs, fed to the reader behind the ``mcap`` Spark data source.

The property: reading ends within the time limit with either record batches, where any message
lost to damage is reported in the read statistics, or an error that names the file (or, when
no file has the topic asked for, the topic). Inputs: logs from the platform's generator
(indexed and unindexed, protobuf and ROS 2) and one written with the upstream ``mcap`` writer.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
from foxglove_schemas_protobuf.PoseInFrame_pb2 import PoseInFrame
from hypothesis import given
from hypothesis import strategies as st
from mcap_protobuf.writer import Writer as ProtobufWriter
from nuro_ml.etl import schemas
from nuro_ml.etl.generator import generate_interval
from nuro_ml.etl.mcap_io import MAGIC, McapFormatError
from nuro_ml.etl.reader import (
    RAW_SCHEMA,
    McapTableReader,
    ReadStats,
    UnsupportedSchemaError,
    infer_schema,
    plan,
)

from tests.unit.fuzz.limits import fuzz_settings, time_limit

TRUNCATION_EXAMPLES = 150
RANDOM_BYTES_EXAMPLES = 150
HANG_SECONDS = 30
UPSTREAM_TOPIC = "/localization/pose"
_names = itertools.count()


@dataclass(frozen=True)
class Log:
    """A valid drive log and what reading it whole gives, per topic asked for."""

    path: Path
    #: ``None`` reads every topic as raw payloads.
    topic: str | None
    rows: int


@dataclass(frozen=True)
class Read:
    rows: int
    stats: ReadStats


def read_all(path: Path, topic: str | None, on_damage: str = "stop") -> Read:
    """Read one file the way a Spark partition does: plan the parts, infer the schema, decode."""
    topics = {topic} if topic else None
    schema = infer_schema([str(path)], topics) if topics else RAW_SCHEMA
    reader = McapTableReader(topics, schema, on_damage=on_damage)
    rows = sum(batch.num_rows for part in plan([str(path)], topics) for batch in reader.read(part))
    return Read(rows, reader.stats)


def _upstream_log(path: Path) -> Path:
    with open(path, "wb") as fh:
        writer = ProtobufWriter(fh, chunk_size=2048)
        for i in range(200):
            pose = PoseInFrame(frame_id="map")
            pose.pose.position.x = float(i)
            writer.write_message(UPSTREAM_TOPIC, pose, log_time=1_700_000_000_000_000_000 + i * 10_000_000)
        writer.finish()
    return path


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> list[Log]:
    root = tmp_path_factory.mktemp("mcap-fuzz")
    small = {"lidar_points": 32, "image_bytes": 256, "chunk_size": 8 << 10, "drive_seconds": 2, "seed": 5}
    day = [date(2025, 3, 1)]
    indexed = generate_interval(root / "indexed", day, ["veh-001"], encoding="protobuf", **small)
    unindexed = generate_interval(
        root / "unindexed", day, ["veh-002"], encoding="ros2", write_summary=False, **small
    )
    upstream = _upstream_log(root / "upstream.mcap")
    out = []
    for path, topic in [
        (indexed[0], schemas.TOPIC_IMU),
        (indexed[0], None),
        (unindexed[0], schemas.TOPIC_POSE),
        (upstream, UPSTREAM_TOPIC),
        (upstream, None),
    ]:
        out.append(Log(path, topic, read_all(path, topic).rows))
    return out


def _names_input(err: Exception, path: Path, topic: str | None) -> bool:
    text = str(err)
    return str(path) in text or (topic is not None and topic in text)


@fuzz_settings(TRUNCATION_EXAMPLES)
@given(which=st.integers(0, 4), share=st.floats(0, 1), on_damage=st.sampled_from(["stop", "fail"]))
def test_truncated_logs(logs: list[Log], which: int, share: float, on_damage: str, tmp_path_factory) -> None:
    log = logs[which]
    data = log.path.read_bytes()
    cut = tmp_path_factory.getbasetemp() / f"truncated-{next(_names)}.mcap"
    cut.write_bytes(data[: int(len(data) * share)])

    try:
        with time_limit(HANG_SECONDS, (log.path.name, share)):
            result = read_all(cut, log.topic, on_damage)
    except (McapFormatError, UnsupportedSchemaError, ValueError) as err:
        assert _names_input(err, cut, log.topic), err
        return
    assert result.rows <= log.rows
    if result.rows < log.rows:
        # Messages lost to the cut are reported, never dropped silently.
        assert result.stats.damage and all(path == str(cut) for path, _, _ in result.stats.damage)
        assert on_damage == "stop"


@fuzz_settings(RANDOM_BYTES_EXAMPLES)
@given(
    data=st.one_of(st.binary(max_size=2048), st.binary(max_size=2048).map(lambda tail: MAGIC + tail)),
    topic=st.sampled_from([None, schemas.TOPIC_IMU]),
    on_damage=st.sampled_from(["stop", "fail"]),
)
def test_random_bytes(data: bytes, topic: str | None, on_damage: str, tmp_path_factory) -> None:
    path = tmp_path_factory.getbasetemp() / f"random-{next(_names)}.mcap"
    path.write_bytes(data)

    try:
        with time_limit(HANG_SECONDS, data[:64]):
            result = read_all(path, topic, on_damage)
    except (McapFormatError, UnsupportedSchemaError, ValueError) as err:
        assert _names_input(err, path, topic), err
        return
    # Whatever was read came with the damage that ended the file, or the bytes held valid records.
    assert result.rows == 0 or result.stats.damage or data.startswith(MAGIC)
    if result.stats.damage:
        assert on_damage == "stop"


def test_whole_logs_read_without_damage(logs: list[Log]) -> None:
    for log in logs:
        assert log.rows > 0, log
        assert not read_all(log.path, log.topic, "fail").stats.damage
