"""Per-view path and writer choice (no services: the choice is made before anything is written)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import PostgreSQLSource
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast.types import Bytes, Float64, Int64, String
from nuro_ml.features.materialize import DATA_VERSION_TAG, Materializer, local_parquet_location
from nuro_ml.features.resp import RedisEndpoint
from nuro_ml.features.writers import FeastProviderWriter, RedisArrowWriter


def _view(
    source: Any, key_type: ValueType = ValueType.STRING, tags: dict[str, str] | None = None
) -> FeatureView:
    dtype = {ValueType.STRING: String, ValueType.INT64: Int64, ValueType.BYTES: Bytes}[key_type]
    entity = Entity(name="thing", join_keys=["thing_id"], value_type=key_type)
    return FeatureView(
        name="things",
        entities=[entity],
        ttl=timedelta(days=1),
        schema=[Field(name="thing_id", dtype=dtype), Field(name="score", dtype=Float64)],
        source=source,
        tags=tags or {},
    )


class _Store:
    """What the path choice reads from a FeatureStore."""

    def __init__(self, repo: Path) -> None:
        self.config = type("Config", (), {"repo_path": repo})()


def _materializer(tmp_path: Path, **kwargs: Any) -> Materializer:
    writer = RedisArrowWriter(RedisEndpoint.from_feast("127.0.0.1:1"), project="p")
    return Materializer(
        _Store(tmp_path),  # type: ignore[arg-type]
        writer=writer,
        target="redis://127.0.0.1:1/0/p",
        cache=None,
        fallback=FeastProviderWriter(_Store(tmp_path)),  # type: ignore[arg-type]
        **kwargs,
    )


def test_local_parquet_sources_take_the_partitioned_path(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "things.parquet").write_bytes(b"PAR1")
    m = _materializer(tmp_path)
    relative = m.choose(_view(FileSource(name="f", path="data/things.parquet", timestamp_field="ts")))
    assert relative.path == "partitioned" and relative.source_path == str(
        tmp_path / "data" / "things.parquet"
    )
    spark = SparkSource(name="s", path=str(tmp_path / "data"), file_format="parquet", timestamp_field="ts")
    assert m.choose(_view(spark)).path == "partitioned"
    assert "SparkSource over local Parquet" in m.choose(_view(spark)).reason


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        (PostgreSQLSource(name="pg", query="SELECT * FROM t", timestamp_field="ts"), "is not a file source"),
        (SparkSource(name="t", table="warehouse.things", timestamp_field="ts"), "reads a table or query"),
        (
            SparkSource(name="c", path="/data/x", file_format="csv", timestamp_field="ts"),
            "csv files, not Parquet",
        ),
        (FileSource(name="r", path="s3://bucket/things.parquet", timestamp_field="ts"), "is remote (s3://)"),
    ],
)
def test_other_sources_go_through_feasts_engine_with_the_reason(
    tmp_path: Path, source: Any, reason: str
) -> None:
    plan = _materializer(tmp_path).choose(_view(source))
    assert plan.path == "feast" and reason in plan.reason
    assert local_parquet_location(source, tmp_path)[0] is None


def test_local_files_not_written_yet_materialize_nothing_with_the_reason(tmp_path: Path) -> None:
    source = FileSource(name="m", path=str(tmp_path / "not-yet"), timestamp_field="ts")
    m = _materializer(tmp_path)
    plan = m.choose(_view(source))
    assert plan.path == "partitioned"
    assert plan.reason == f"FileSource over local Parquet at {tmp_path / 'not-yet'} (no data there yet)"


def test_a_view_the_fast_writer_cannot_encode_falls_back_to_feasts_write(tmp_path: Path) -> None:
    source = FileSource(name="f", path="things.parquet", timestamp_field="ts")
    m = _materializer(tmp_path)
    writer, reason = m._writer_for(_view(source, ValueType.BYTES))
    assert writer is m.fallback and "join key 'thing_id' of type BYTES" in reason
    writer, reason = m._writer_for(_view(source, ValueType.INT64))
    assert writer is m.writer and reason == "redis writer"
    old_keys = RedisArrowWriter(
        RedisEndpoint.from_feast("127.0.0.1:1"), project="p", entity_key_serialization_version=2
    )
    assert "serialization version 2" in (old_keys.unsupported(_view(source)) or "")


def test_declared_data_versions_operator_over_tag(tmp_path: Path) -> None:
    source = PostgreSQLSource(name="pg", query="SELECT 1", timestamp_field="ts")
    tagged = _view(source, tags={DATA_VERSION_TAG: "2026-12-01"})
    assert _materializer(tmp_path).data_version(tagged) == "2026-12-01"
    assert _materializer(tmp_path, data_versions={"things": "v7"}).data_version(tagged) == "v7"
    assert _materializer(tmp_path).data_version(_view(source)) is None
