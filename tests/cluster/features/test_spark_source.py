"""A SparkSource over the ETL's Parquet with the Spark offline store, against stock Feast on Spark.

On demand (``make cluster-test``): stock Feast starts a local Spark session, which takes about a
minute on a loaded 2-core machine. Ours reads the same Parquet with Arrow (the partitioned path).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from nuro_ml import settings
from nuro_ml.operators.feast import FeastMaterializeOperator

from tests.integration.features.feast_repos import stock_online_features
from tests.integration.features.test_own_repository import run_ours, scene_rows
from tests.unit.features.scene_data import DAY0, days, utc, write_days

pytestmark = pytest.mark.cluster


SPARK_REPO = """
from datetime import timedelta
from feast import Entity, FeatureView, Field, ValueType
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast.types import Float64, Int64, String

scene = Entity(name="scene", join_keys=["scene_id"], value_type=ValueType.STRING)
scene_stats_spark = SparkSource(
    name="scene_stats_spark",
    path="ETL_PATH",
    file_format="parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created_timestamp",
)
scene_motion_spark = FeatureView(
    name="scene_motion_spark",
    entities=[scene],
    ttl=timedelta(days=30),
    schema=[
        Field(name="scene_id", dtype=String),
        Field(name="speed_mean_mps", dtype=Float64),
        Field(name="camera_frames", dtype=Int64),
    ],
    source=scene_stats_spark,
)
"""

SPARK_YAML = """
project: spark_users
provider: local
registry: data/registry.db
online_store:
  type: sqlite
  path: data/online_store.db
offline_store:
  type: spark
  spark_conf:
    spark.master: "local[1]"
    spark.ui.enabled: "false"
    spark.sql.session.timeZone: "UTC"
    spark.sql.shuffle.partitions: "1"
entity_key_serialization_version: 3
"""


def test_spark_source_over_the_etl_parquet_takes_the_fast_path_and_equals_sparks(
    data_dir: Path, tmp_path: Path
) -> None:
    write_days(2, scenes=3)
    etl = settings.etl_output_dir() / "scene_stats"
    repos = []
    for name in ("ours", "stock"):
        repo = tmp_path / name
        repo.mkdir()
        (repo / "scene_spark.py").write_text(SPARK_REPO.replace("ETL_PATH", str(etl)))
        (repo / "feature_store.yaml").write_text(SPARK_YAML)
        repos.append(repo)
    start, end = utc(DAY0, 6), utc(days(3)[-1])
    rows = [{"scene_id": r["scene_id"]} for r in scene_rows()]

    ours = run_ours(repos[0], start, end, rows)
    try:
        stock = stock_online_features(
            repos[1], start - FeastMaterializeOperator(task_id="x").lookback, end, rows
        )
    finally:
        from pyspark.sql import SparkSession

        active = SparkSession.getActiveSession()
        if active is not None:
            active.stop()

    path = ours["paths"]["scene_motion_spark"]
    assert path["path"] == "partitioned" and path["cache"] == "files:stat"
    assert path["reason"].startswith(f"SparkSource over local Parquet at {etl}")
    assert ours["_online"] == stock
    assert all(v is not None for v in stock["scene_motion_spark__speed_mean_mps"])
