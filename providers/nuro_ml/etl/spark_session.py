"""A lean SparkSession for the ETL: no UI unless asked, few shuffle partitions, UTC, loopback."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

#: Settings every ETL session gets; ``conf`` passed by the caller wins.
DEFAULT_CONF: dict[str, str] = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "4",
    "spark.default.parallelism": "2",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.sources.partitionOverwriteMode": "dynamic",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.python.filterPushdown.enabled": "true",
    "spark.python.worker.reuse": "true",
    "spark.driver.memory": "1g",
    "spark.sql.adaptive.enabled": "true",
    "spark.hadoop.parquet.enable.summary-metadata": "false",
    "spark.sql.sources.partitionColumnTypeInference.enabled": "false",
    "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
    # Python workers (UDFs, Python data sources, streaming source runners) must connect back
    # within this time; the 15 s default fails queries on a loaded two-core machine.
    "spark.python.authenticate.socketTimeout": "120s",
}


def build_session(
    master: str | None = "local[2]", *, app_name: str = "nuro-ml-etl", conf: Mapping[str, str] | None = None
) -> SparkSession:
    """Get or create a session; ``master=None`` leaves the master to ``spark-submit``."""
    from pyspark.sql import SparkSession

    from nuro_ml.etl.datasource import register

    # Executors must run the interpreter that has this package and its decoders installed.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    if master is not None:
        builder = builder.master(master)
        if master.startswith("local"):
            builder = builder.config("spark.driver.host", "127.0.0.1").config(
                "spark.driver.bindAddress", "127.0.0.1"
            )
    settings = {**DEFAULT_CONF, **(conf or {})}
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    register(spark)
    return spark
