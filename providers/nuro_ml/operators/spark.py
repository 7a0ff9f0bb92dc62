"""Operator running the MCAP -> Parquet ETL on local Spark or through ``spark-submit``."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from nuro_ml import settings
from nuro_ml.exceptions import ETLError
from nuro_ml.task_key import TaskKey

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context


#: Joins the task key's parts in ETL run keys (``<dag>__<run>__<task>__<map index>``).
RUN_KEY_SEPARATOR = "__"


class MCAPToParquetOperator(BaseOperator):
    """
    Turn the drive logs (MCAP) of an interval into ML-ready Parquet tables partitioned by date/vehicle.

    Bad input files are quarantined with a manifest; the run fails with
    :class:`~nuro_ml.exceptions.TooManyBadFilesError` when more than ``max_bad_file_share`` of the
    files are bad. A file without an index that ends in damage (a truncated tail) is read up to the
    damage first, so its valid messages are kept. Each ``date/vehicle`` partition the run touches is
    replaced atomically.

    .. seealso::
        :ref:`howto/operator:MCAPToParquetOperator`

    :param start: start of the interval, inclusive (date, datetime or ISO string). (templated)
    :param end: end of the interval, exclusive; every calendar day overlapping [start, end) is
        processed as a whole. (templated)
    :param input_path: root of the raw layout ``date=YYYY-MM-DD/vehicle=<id>/*.mcap``; default
        ``settings.raw_logs_dir()``. (templated)
    :param output_path: root of the tables; default ``settings.etl_output_dir()``. (templated)
    :param vehicles: only these vehicle ids (``None``: all). (templated)
    :param max_bad_file_share: largest share of bad input files that still lets the run succeed.
    :param quarantine_path: where bad files and ``manifest.jsonl`` go; default
        ``settings.quarantine_dir()``. (templated)
    :param spark_conf: extra Spark settings (e.g. ``{"spark.ui.enabled": "true"}``). (templated)
    :param conn_id: ``None`` runs Spark in-process on ``master``; otherwise the id of a
        :ref:`spark connection <howto/connection:spark-submit>` (e.g. ``spark_default``) through
        which the same job module is submitted with ``spark-submit``. (templated)
    :param master: Spark master of the in-process session.
    :param grid_hz: rate of the ``ego_motion`` clock grid.
    :param scene_seconds: length of a scene window.
    :param hard_brake_bar: brake pressure above which a scene is labelled ``hard_brake``.
    :param mapping_path: topic mapping file (YAML or JSON) saying which topics feed which table and
        how fields become columns; ``None`` uses the built-in mapping (ROS 2 standard types,
        Foxglove schemas, our own types). Topics no source maps land in generic ``topic_<name>``
        tables; see :mod:`nuro_ml.etl.mapping`. (templated)
    :param path_template: where recordings lie under ``input_path``: ``hive`` (default,
        ``date={date}/vehicle={vehicle}/{drive}.mcap``), ``vehicle-date``, ``rosbag2`` or a template
        with ``{date}``, ``{date:%Y_%m_%d}``, ``{vehicle}``, ``{drive}``, ``*`` and ``**``; see
        :mod:`nuro_ml.etl.layout`. (templated)
    :param allow_empty: an interval without drive logs is skipped (logged, task skipped) instead
        of failing the task.
    :param reprocess: rebuild every partition of the interval. By default a date/vehicle partition
        whose drive logs and settings are unchanged since it was built is left as it is (and Spark
        is not started when nothing needs building).
    """

    template_fields: Sequence[str] = (
        "start",
        "end",
        "input_path",
        "output_path",
        "vehicles",
        "quarantine_path",
        "spark_conf",
        "conn_id",
        "mapping_path",
        "path_template",
    )
    template_fields_renderers = {"spark_conf": "json"}
    ui_color = "#e8f1fb"

    def __init__(
        self,
        *,
        start: Any,
        end: Any,
        input_path: str | None = None,
        output_path: str | None = None,
        vehicles: list[str] | str | None = None,
        max_bad_file_share: float = 0.2,
        quarantine_path: str | None = None,
        spark_conf: dict[str, str] | None = None,
        conn_id: str | None = None,
        master: str = "local[2]",
        grid_hz: float = 10.0,
        scene_seconds: float = 10.0,
        hard_brake_bar: float = 45.0,
        reprocess: bool = False,
        mapping_path: str | None = None,
        path_template: str = "hive",
        allow_empty: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.start = start
        self.end = end
        self.input_path = input_path
        self.output_path = output_path
        self.vehicles = vehicles
        self.max_bad_file_share = max_bad_file_share
        self.quarantine_path = quarantine_path
        self.spark_conf = spark_conf
        self.conn_id = conn_id
        self.master = master
        self.grid_hz = grid_hz
        self.scene_seconds = scene_seconds
        self.hard_brake_bar = hard_brake_bar
        self.reprocess = reprocess
        self.mapping_path = mapping_path
        self.path_template = path_template
        self.allow_empty = allow_empty
        self._hook: Any = None
        self._spark: Any = None
        self._killed = False

    def _config(self, context: Context) -> Any:
        from nuro_ml.etl.job import ETLJobConfig

        ti = context["ti"]
        vehicles = self.vehicles
        if isinstance(vehicles, str):
            vehicles = json.loads(vehicles) if vehicles.strip().startswith("[") else vehicles.split(",")
        cfg = ETLJobConfig(
            input_path=str(self.input_path or settings.raw_logs_dir()),
            output_path=str(self.output_path or settings.etl_output_dir()),
            start=str(self.start),
            end=str(self.end),
            quarantine_path=str(self.quarantine_path or settings.quarantine_dir()),
            vehicles=list(vehicles) if vehicles else None,
            max_bad_file_share=self.max_bad_file_share,
            run_key=TaskKey.of(ti).joined(RUN_KEY_SEPARATOR),
            grid_hz=self.grid_hz,
            scene_seconds=self.scene_seconds,
            hard_brake_bar=self.hard_brake_bar,
            reprocess=self.reprocess,
            mapping_path=str(self.mapping_path) if self.mapping_path else None,
            allow_empty=self.allow_empty,
            path_template=self.path_template or "hive",
        )
        problem = cfg.problem()
        if problem:
            name = {"--input": "input_path"}.get(problem[0], problem[0].removeprefix("--").replace("-", "_"))
            raise ETLError(f"MCAPToParquetOperator {self.task_id}: {name}: {problem[1]}")
        return cfg

    def execute(self, context: Context) -> dict[str, Any]:
        cfg = self._config(context)
        self.log.info(
            "ETL of %s .. %s from %s to %s (run key %s)",
            cfg.start,
            cfg.end,
            cfg.input_path,
            cfg.output_path,
            cfg.run_key,
        )
        result = self._run_local(cfg) if self.conn_id is None else self._run_submit(cfg)
        if result.get("skipped"):
            from airflow.sdk.exceptions import AirflowSkipException

            raise AirflowSkipException(result["skipped"])
        self.log.info(
            "ETL done: %d files, %d bytes, %d partitions (%d already up to date), %d quarantined",
            result["files"],
            result["bytes"],
            len(result["partitions"]),
            len(result.get("up_to_date", [])),
            len(result["quarantined"]),
        )
        for entry in result["quarantined"]:
            self.log.warning(
                "Quarantined %s: %s (offset %s)", entry["file"], entry["reason"], entry["offset"]
            )
        self._lineage_result = result
        return result

    def _run_local(self, cfg: Any) -> dict[str, Any]:
        from pyspark.sql import SparkSession

        from nuro_ml.etl.job import run_etl
        from nuro_ml.etl.spark_session import build_session

        # A session already running in this process (another task, a test) is reused, not stopped.
        owned = SparkSession.getActiveSession() is None

        def session() -> SparkSession:
            # Started only when a partition needs building: an up-to-date interval costs no JVM.
            self._spark = build_session(
                self.master, app_name=f"nuro-ml-etl-{cfg.run_key}", conf=self.spark_conf
            )
            return self._spark

        try:
            return run_etl(session, cfg, progress=lambda msg: self.log.info("%s", msg))
        finally:
            if owned and self._spark is not None:
                self._spark.stop()
            self._spark = None

    def _run_submit(self, cfg: Any) -> dict[str, Any]:
        from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

        from nuro_ml.etl import job
        from nuro_ml.etl.job import result_path
        from nuro_ml.etl.spark_session import DEFAULT_CONF

        conf = {k: v for k, v in DEFAULT_CONF.items() if k != "spark.driver.memory"}
        conf.setdefault("spark.pyspark.python", sys.executable)
        conf.setdefault("spark.pyspark.driver.python", sys.executable)
        conf.update(self.spark_conf or {})
        bin_dir = str(Path(sys.executable).parent)
        env = {
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYSPARK_PYTHON": sys.executable,
            # An Airflow 3 worker hands its task a deliberately unparsable metadata-database URL; the
            # driver imports nuro_ml (so Airflow) but never uses that database, so it gets a valid one.
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "sqlite://",
        }
        out = result_path(cfg.output_path, cfg.run_key)
        out.unlink(missing_ok=True)
        self._hook = SparkSubmitHook(
            conf=conf,
            conn_id=self.conn_id or "spark_default",
            application_args=cfg.to_args(),
            name=f"nuro-ml-etl-{cfg.run_key}",
            env_vars=env,
        )
        self._hook.submit(application=job.__file__)
        if not out.exists():
            raise ETLError(f"spark-submit finished but wrote no result at {out}")
        return dict(json.loads(out.read_text()))

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """Input drive logs and output Parquet tables with schemas and row counts (OpenLineage)."""
        from nuro_ml.lineage.etl import etl_operator_lineage

        return etl_operator_lineage(self)

    def on_kill(self) -> None:
        self._killed = True
        try:
            if self._hook is not None:
                self._hook.on_kill()
            if self._spark is not None:
                self._spark.sparkContext.cancelAllJobs()
        except Exception:
            self.log.exception("Could not cancel the ETL's Spark work")
