"""The streaming sources' offsets and reads, driven as Spark drives them (no Spark needed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pytest
import redis
from nuro_ml.etl.arrivals import land_segment, segment_spec
from nuro_ml.etl.stream_sources.mcap_landing import Manifest, McapLandingDataSource, table_schema
from nuro_ml.etl.stream_sources.redis_stream import RedisStreamDataSource
from pyspark.sql.streaming.datasource import ReadAllAvailable, ReadMaxFiles, ReadMaxRows

from tests.fixtures.s3 import moto_endpoint, s3_client, s3_env
from tests.fixtures.services import RedisServer

__all__ = ["moto_endpoint"]

pytestmark = pytest.mark.integration
DB = 13


@pytest.fixture
def client(redis_server: RedisServer) -> redis.Redis:
    c = redis.Redis(host=redis_server.host, port=redis_server.port, db=DB, decode_responses=True)
    c.flushdb()
    yield c
    c.flushdb()
    c.close()


def test_redis_offsets_replay_the_same_entries_and_respect_the_limit(
    client: redis.Redis, redis_server: RedisServer
) -> None:
    ids = [client.xadd("t", {"vehicle_id": "v", "n": str(i)}) for i in range(25)]
    url = f"redis://{redis_server.host}:{redis_server.port}/{DB}"
    reader = RedisStreamDataSource({"url": url, "stream": "t", "maxRecordsPerBatch": "10"}).streamReader(None)
    start = reader.initialOffset()
    assert start == {"id": "0-0"}
    assert reader.getDefaultReadLimit() == ReadMaxRows(10)
    first = reader.latestOffset(start, reader.getDefaultReadLimit())
    assert first == {"id": ids[9]}
    rows = [r for p in reader.partitions(start, first) for r in reader.read(p)]
    assert [r[2]["n"] for r in rows] == [str(i) for i in range(10)]
    # Replaying the batch (a restart from the checkpoint) reads exactly the same entries.
    again = [r for p in reader.partitions(start, first) for r in reader.read(p)]
    assert again == rows
    rest = reader.latestOffset(first, ReadAllAvailable())
    assert rest == {"id": ids[-1]}
    assert len([r for p in reader.partitions(first, rest) for r in reader.read(p)]) == 15
    assert reader.latestOffset(rest, ReadAllAvailable()) == rest
    assert reader.partitions(rest, rest) == []


def test_redis_source_names_missing_and_bad_options() -> None:
    with pytest.raises(ValueError, match="needs option\\(s\\) url, stream"):
        RedisStreamDataSource({})
    with pytest.raises(ValueError, match="maxRecordsPerBatch must be a whole number"):
        RedisStreamDataSource({"url": "redis://x", "stream": "s", "maxRecordsPerBatch": "ten"})
    with pytest.raises(ValueError, match="'abc' is not a Redis Stream entry id"):
        RedisStreamDataSource({"url": "redis://x", "stream": "s", "startingId": "abc"})


def test_landing_manifest_assigns_each_segment_one_position_across_restarts(tmp_path: Path) -> None:
    landing, manifest = tmp_path / "landing", tmp_path / "ckpt" / "manifest.jsonl"
    options = {"path": str(landing), "manifest": str(manifest), "maxFilesPerTrigger": "2"}
    for i in range(3):
        land_segment(landing, segment_spec("veh-001", i, seconds=2.0))
    reader = McapLandingDataSource(options).streamReader(None)
    start = reader.initialOffset()
    assert reader.getDefaultReadLimit() == ReadMaxFiles(2)
    first = reader.latestOffset(start, reader.getDefaultReadLimit())
    assert first == {"files": 2}
    # A restarted reader sees the same positions, and a new segment goes to the end.
    land_segment(landing, segment_spec("veh-002", 0, seconds=2.0))
    again = McapLandingDataSource(options).streamReader(None)
    assert [p.names for p in again.partitions(start, first)] == [
        p.names for p in reader.partitions(start, first)
    ]
    end = again.latestOffset(first, ReadAllAvailable())
    assert end == {"files": 4}
    assert Manifest(manifest).entries[-1].startswith("date=2026-01-05/vehicle=veh-002/")
    # A half-written file (not yet renamed into place) is not a segment.
    (landing / "date=2026-01-05" / "vehicle=veh-001" / ".drv.mcap.tmp-1").write_bytes(b"partial")
    assert again.latestOffset(end, ReadAllAvailable()) == end


def test_landing_read_decodes_a_segment_with_the_batch_mapping_and_skips_a_corrupt_one(
    tmp_path: Path,
) -> None:
    landing = tmp_path / "landing"
    good = land_segment(landing, segment_spec("veh-001", 0, seconds=2.0))
    assert good is not None
    bad = good.with_name("drv-20260105-09.mcap")
    shutil.copy(good, bad)
    with open(bad, "r+b") as fh:
        fh.seek(200)
        fh.write(b"\xff" * 64)
    options = {"path": str(landing), "manifest": str(tmp_path / "m.jsonl"), "table": "vehicle_can"}
    reader = McapLandingDataSource(options).streamReader(None)
    end = reader.latestOffset(reader.initialOffset(), ReadAllAvailable())
    tables = {
        p.names[0]: pa.Table.from_batches(list(reader.read(p)), schema=table_schema("vehicle_can"))
        for p in reader.partitions(reader.initialOffset(), end)
    }
    rows = tables[good.relative_to(landing).as_posix()]
    assert rows.num_rows > 0
    assert set(rows.column("vehicle_id").to_pylist()) == {"veh-001"}
    assert set(rows.column("topic").to_pylist()) == {"/vehicle/can"}
    assert tables[bad.relative_to(landing).as_posix()].num_rows == 0


def test_landing_source_rejects_a_table_it_cannot_stream(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="table 'lidar_payload' cannot be streamed"):
        McapLandingDataSource(
            {"path": str(tmp_path), "manifest": str(tmp_path / "m"), "table": "lidar_payload"}
        )


def test_landing_on_s3_lists_new_objects_once_and_decodes_them(
    tmp_path: Path, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in s3_env(moto_endpoint).items():
        monkeypatch.setenv(key, value)
    s3 = s3_client(moto_endpoint)
    s3.create_bucket(Bucket="fleet")
    local = tmp_path / "segments"
    first = land_segment(local, segment_spec("veh-001", 0, seconds=2.0))
    second = land_segment(local, segment_spec("veh-002", 0, seconds=2.0))
    assert first is not None and second is not None
    s3.upload_file(str(first), "fleet", f"landing/{first.relative_to(local).as_posix()}")
    options = {"path": "s3://fleet/landing", "manifest": str(tmp_path / "m.jsonl"), "table": "vehicle_can"}
    reader = McapLandingDataSource(options).streamReader(None)
    start = reader.initialOffset()
    end = reader.latestOffset(start, ReadAllAvailable())
    assert end == {"files": 1}
    s3.upload_file(str(second), "fleet", f"landing/{second.relative_to(local).as_posix()}")
    later = reader.latestOffset(end, ReadAllAvailable())
    assert later == {"files": 2}
    rows = [b for p in reader.partitions(start, later) for b in reader.read(p)]
    table = pa.Table.from_batches(rows, schema=table_schema("vehicle_can"))
    assert set(table.column("vehicle_id").to_pylist()) == {"veh-001", "veh-002"}
    assert table.num_rows > 0
