"""Spark ETL of one day of MCAP drive logs into partitioned Parquet tables."""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import DAG
from nuro_ml.operators.spark import MCAPToParquetOperator

with DAG(
    dag_id="example_mcap_to_parquet",
    schedule="@daily",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["example", "etl"],
):
    # [START howto_operator_mcap_to_parquet]
    etl = MCAPToParquetOperator(
        task_id="etl",
        start="{{ data_interval_start }}",
        end="{{ data_interval_end }}",
        vehicles=["veh-001", "veh-002"],
        # A day with more than a fifth of its logs unreadable fails; fewer are quarantined.
        max_bad_file_share=0.2,
    )
    # [END howto_operator_mcap_to_parquet]

    # [START howto_operator_mcap_to_parquet_cluster]
    etl_on_cluster = MCAPToParquetOperator(
        task_id="etl_on_cluster",
        start="{{ data_interval_start }}",
        end="{{ data_interval_end }}",
        conn_id="spark_default",
        spark_conf={"spark.executor.memory": "4g"},
    )
    # [END howto_operator_mcap_to_parquet_cluster]
