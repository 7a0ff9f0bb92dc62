from __future__ import annotations

from datetime import date
from types import SimpleNamespace

import pyarrow.dataset as ds
import pytest
from nuro_ml.etl import schemas
from nuro_ml.etl.generator import generate_interval
from nuro_ml.operators.spark import MCAPToParquetOperator

pytestmark = pytest.mark.integration


def test_operator_submits_job_to_standalone_cluster(spark_standalone, tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    generate_interval(
        raw, [date(2024, 3, 2)], ["veh-001"], drive_seconds=11, seed=5, lidar_points=64, image_bytes=512
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_SPARK_STANDALONE", f"spark://{spark_standalone.host}:{spark_standalone.port}"
    )
    op = MCAPToParquetOperator(
        task_id="etl",
        start="2024-03-02T00:00:00+00:00",
        end="2024-03-03T00:00:00+00:00",
        input_path=str(raw),
        output_path=str(tmp_path / "etl"),
        quarantine_path=str(tmp_path / "quarantine"),
        conn_id="spark_standalone",
        spark_conf={"spark.executor.memory": "1g", "spark.cores.max": "2"},
    )
    context = {
        "ti": SimpleNamespace(dag_id="etl_it", run_id="manual__standalone", task_id="etl", map_index=-1)
    }
    result = op.execute(context)
    assert result["files"] == 1
    assert result["messages"] == {topic: int(11 * spec.rate_hz) for topic, spec in schemas.TOPICS.items()}
    assert result["partitions"] == ["date=2024-03-02/vehicle=veh-001"]
    scenes = ds.dataset(tmp_path / "etl" / "scene_stats", format="parquet", partitioning="hive").to_table()
    assert scenes["scene_id"].to_pylist() == ["veh-001_drv-20240302-00_0000"]
