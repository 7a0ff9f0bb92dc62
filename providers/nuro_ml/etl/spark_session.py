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

#: Added to local sessions that run one batch job (the ETL in-process): their driver JVM is also
#: the executor and lives for one job, in which it hands tasks to the Python workers. The quick
#: JIT compiles that well enough; the optimising JIT's compiler threads would take CPU from the
#: Python workers for most of the job (on two cores the job ran about 8% faster with it off).
LOCAL_BATCH_CONF: dict[str, str] = {"spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1"}


def build_session(
    master: str | None = "local[2]",
    *,
    app_name: str = "nuro-ml-etl",
    conf: Mapping[str, str] | None = None,
    long_lived: bool = False,
) -> SparkSession:
    """Get or create a session; ``master=None`` leaves the master to ``spark-submit``.

    :param conf: settings over :data:`DEFAULT_CONF` (and :data:`LOCAL_BATCH_CONF`).
    :param long_lived: the session serves a long-running application (the stream), so a local
        JVM keeps its default JIT instead of :data:`LOCAL_BATCH_CONF`.
    """
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
    batch = LOCAL_BATCH_CONF if master and master.startswith("local") and not long_lived else {}
    settings = {**DEFAULT_CONF, **batch, **(conf or {})}
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    register(spark)
    return spark
