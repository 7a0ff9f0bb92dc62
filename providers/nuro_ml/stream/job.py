"""The telemetry stream: MCAP segments and live records to stream tables and online features.

A long-lived Spark Structured Streaming application (``python -m nuro_ml.stream.job``),
the streaming sibling of the batch job ``nuro_ml.etl.job``. Its queries:

* ``segments_<table>``: segments landing in a folder (``nuro_ml.etl.stream_sources.mcap_landing``, decoded
  by the batch ETL's per-file pass and topic mapping) to ``<output>/stream/<table>``;
* ``telemetry``: live records on a Redis Stream (``nuro_ml.etl.stream_sources.redis_stream``) to
  ``<output>/stream/telemetry``;
* ``online``: the committed rows of both tables, latest per vehicle, pushed through Feast's push
  source to the online store (``vehicle_live_state``).

The first two append through Spark's file sink: the sink's metadata log and the query's
checkpoint make each micro-batch land exactly once, also when the driver dies mid-batch and the
stream restarts from its checkpoint. Duplicates (a segment landing twice, a record published
twice) are dropped by key within an event-time watermark; rows older than the watermark are late
and dropped. The online query reads the file sink's committed files only (its metadata log), so
a feature is never online before its row is durable; pushes are idempotent (the online store
keeps the newest event per entity).

A :class:`ProgressListener` keeps the progress record (``nuro_ml.etl.stream_progress``) that the
Airflow trigger and sensor read; SIGTERM stops the queries cleanly.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nuro_ml.etl.stream_progress import QueryProgress, StreamProgress, now_iso
from nuro_ml.etl.stream_tables import (
    ONLINE_COLUMNS,
    ONLINE_QUERY,
    PUSH_SOURCE,
    STREAM_DIR,
    TELEMETRY_FIELDS,
    TELEMETRY_TABLE,
)

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming import StreamingQuery

log = logging.getLogger(__name__)

#: Attempts and seconds to wait for a query's first micro-batch at startup.
_START_ATTEMPTS = 3
_STARTUP_SECONDS = 300.0
_CONNECT_BACK = "Python worker failed to connect back"
#: Freshness samples kept for the rolling p95.
_FRESHNESS_WINDOW = 100_000


def segment_query(table: str) -> str:
    return f"segments_{table}"


@dataclass
class StreamJobConfig:
    """Everything the stream needs; passed to the application as one JSON argument."""

    output_path: str
    checkpoint_path: str
    #: Where the progress record lives (the supervisor reads it).
    state_dir: str
    landing_path: str | None = None
    redis_url: str | None = None
    redis_stream: str = "telemetry"
    #: Mapped tables streamed from segments.
    tables: list[str] = field(default_factory=lambda: ["vehicle_can"])
    mapping_path: str | None = None
    #: Feast repository to push online features to; ``None``: no online query.
    feature_repo: str | None = None
    push_source: str = PUSH_SOURCE
    trigger_seconds: float = 1.0
    #: How late (event time) a segment row or live record may arrive and still count. One
    #: watermark spans the fleet, so the segment delay must cover the slowest vehicle's upload lag.
    segment_watermark: str = "6 hours"
    telemetry_watermark: str = "10 minutes"
    max_files_per_trigger: int = 16
    max_records_per_trigger: int = 200_000
    master: str | None = "local[2]"
    spark_conf: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from nuro_ml.etl.stream_sources.mcap_landing import table_schema

        if not self.landing_path and not self.redis_url:
            raise ValueError("the stream needs a landing path, a Redis URL, or both")
        for table in self.tables:
            table_schema(table)

    def to_args(self) -> list[str]:
        return ["--config-json", json.dumps(asdict(self))]

    def table_path(self, table: str) -> Path:
        return Path(self.output_path) / STREAM_DIR / table

    def checkpoint(self, query: str) -> str:
        return str(Path(self.checkpoint_path) / query)

    def sink_queries(self) -> list[str]:
        names = [segment_query(t) for t in self.tables] if self.landing_path else []
        return names + ([TELEMETRY_TABLE] if self.redis_url else [])


def register_sources(spark: SparkSession) -> None:
    from nuro_ml.etl.stream_sources.mcap_landing import McapLandingDataSource
    from nuro_ml.etl.stream_sources.redis_stream import RedisStreamDataSource

    spark.dataSource.register(McapLandingDataSource)
    spark.dataSource.register(RedisStreamDataSource)


def segment_rows(spark: SparkSession, cfg: StreamJobConfig, table: str) -> DataFrame:
    """Rows of ``table`` from landed segments, deduplicated by message key within the watermark.

    The key is the message's (vehicle, topic, log time): a segment uploaded twice, under any
    name, lands once.
    """
    assert cfg.landing_path
    reader = (
        spark.readStream.format("mcap_landing")
        .option("table", table)
        .option("manifest", str(Path(cfg.checkpoint(segment_query(table))) / "landing-manifest.jsonl"))
        .option("maxFilesPerTrigger", str(cfg.max_files_per_trigger))
    )
    if cfg.mapping_path:
        reader = reader.option("mapping", cfg.mapping_path)
    return (
        reader.load(cfg.landing_path)
        .withWatermark("log_time", cfg.segment_watermark)
        .dropDuplicatesWithinWatermark(["vehicle_id", "topic", "log_time_ns"])
    )


def telemetry_rows(spark: SparkSession, cfg: StreamJobConfig) -> DataFrame:
    """Live records, typed, deduplicated by ``record_id`` within the watermark.

    A record without ``record_id`` is keyed by its entry id (so only Redis-level replays of the
    same entry are duplicates).
    """
    from pyspark.sql import functions as F

    assert cfg.redis_url
    raw = (
        spark.readStream.format("redis_stream")
        .option("url", cfg.redis_url)
        .option("stream", cfg.redis_stream)
        .option("maxRecordsPerBatch", str(cfg.max_records_per_trigger))
        .load()
    )
    typed = [F.col("fields").getItem(name).cast(kind).alias(name) for name, kind in TELEMETRY_FIELDS.items()]
    rows = raw.select(F.col("id").alias("entry_id"), "added_at", *typed)
    return (
        rows.withColumn("record_id", F.coalesce("record_id", "entry_id"))
        .withColumn("event_time", F.timestamp_micros(F.expr("event_time_ns div 1000")))
        .where(F.col("vehicle_id").isNotNull() & F.col("event_time").isNotNull())
        .withWatermark("event_time", cfg.telemetry_watermark)
        .dropDuplicatesWithinWatermark(["record_id"])
    )


def online_rows(spark: SparkSession, cfg: StreamJobConfig, schemas: dict[str, Any]) -> DataFrame:
    """Committed stream rows in the push source's shape, with their arrival time."""
    from pyspark.sql import functions as F

    parts = []
    if cfg.landing_path and "vehicle_can" in cfg.tables:
        can = spark.readStream.schema(schemas["vehicle_can"]).parquet(str(cfg.table_path("vehicle_can")))
        parts.append(
            can.select(
                "vehicle_id",
                F.col("log_time").alias("event_timestamp"),
                "speed_mps",
                "brake_pressure_bar",
                "steering_angle_rad",
                F.col("landed_at").alias("arrived_at"),
                F.lit("segment").alias("origin"),
            )
        )
    if cfg.redis_url:
        live = spark.readStream.schema(schemas[TELEMETRY_TABLE]).parquet(str(cfg.table_path(TELEMETRY_TABLE)))
        parts.append(
            live.select(
                "vehicle_id",
                F.col("event_time").alias("event_timestamp"),
                "speed_mps",
                "brake_pressure_bar",
                "steering_angle_rad",
                F.col("added_at").alias("arrived_at"),
                F.lit("record").alias("origin"),
            )
        )
    if not parts:
        raise ValueError("online features need the vehicle_can segment table or live telemetry")
    out = parts[0]
    for part in parts[1:]:
        out = out.unionByName(part)
    return out


def latest_per_vehicle(frame: pd.DataFrame) -> pd.DataFrame:
    """The newest row (by event time) of each vehicle."""
    ordered = frame.sort_values(["vehicle_id", "event_timestamp"], kind="stable")
    return ordered.groupby("vehicle_id", sort=False).tail(1).reset_index(drop=True)


class ProgressRecorder:
    """Owns the progress record in the driver; the listener and the online query update it."""

    def __init__(self, cfg: StreamJobConfig, pid: int) -> None:
        self.cfg = cfg
        self.lock = threading.Lock()
        self.record = StreamProgress(
            pid=pid, started_at=now_iso(), checkpoint=cfg.checkpoint_path, output=cfg.output_path
        )
        self.samples: deque[float] = deque(maxlen=_FRESHNESS_WINDOW)
        self.by_origin: dict[str, deque[float]] = {
            origin: deque(maxlen=_FRESHNESS_WINDOW) for origin in ("segment", "record")
        }

    def _save(self) -> None:
        self.record.write(self.cfg.state_dir)

    def started(self, name: str, query_id: str, run_id: str) -> None:
        with self.lock:
            self.record.queries[name] = QueryProgress(id=query_id, run_id=run_id, heartbeat_at=now_iso())
            self._save()

    def progress(self, name: str, progress: Any) -> None:
        with self.lock:
            q = self.record.queries.setdefault(
                name, QueryProgress(id=str(progress.id), run_id=str(progress.runId))
            )
            q.batch_id = int(progress.batchId)
            q.committed_at = q.heartbeat_at = now_iso()
            q.num_input_rows = int(progress.numInputRows)
            q.input_rows_per_second = float(progress.inputRowsPerSecond or 0.0)
            q.processed_rows_per_second = float(progress.processedRowsPerSecond or 0.0)
            q.batch_duration_ms = int((progress.durationMs or {}).get("triggerExecution", 0))
            watermark = (progress.eventTime or {}).get("watermark")
            if watermark:
                q.watermark = watermark
            q.terminated = None
            self._save()

    def idle(self, name: str) -> None:
        with self.lock:
            q = self.record.queries.get(name)
            if q is not None:
                q.heartbeat_at = now_iso()
                self._save()

    def terminated(self, name: str, error: str | None) -> None:
        with self.lock:
            q = self.record.queries.get(name)
            if q is not None:
                q.terminated = error or ""
                self._save()

    def freshness(self, seconds: np.ndarray, origins: np.ndarray) -> dict[str, float]:
        """Add a pushed batch's per-row freshness (and each row's origin); returns the figures."""
        if not len(seconds):
            return dict(self.record.freshness)
        with self.lock:
            self.samples.extend(seconds.tolist())
            for origin in ("segment", "record"):
                self.by_origin[origin].extend(seconds[origins == origin].tolist())
            figures = {
                "batch_p95_seconds": float(np.percentile(seconds, 95)),
                "batch_max_seconds": float(seconds.max()),
                "p95_seconds": float(np.percentile(np.fromiter(self.samples, float), 95)),
                "samples": float(len(self.samples)),
            }
            for origin, window in self.by_origin.items():
                if window:
                    figures[f"{origin}_p95_seconds"] = float(np.percentile(np.fromiter(window, float), 95))
            self.record.freshness = figures
            self._save()
            return dict(figures)


def progress_listener(recorder: ProgressRecorder) -> Any:
    """A ``StreamingQueryListener`` writing each query's progress to ``recorder``."""
    from pyspark.sql.streaming import StreamingQueryListener

    class ProgressListener(StreamingQueryListener):
        def onQueryStarted(self, event: Any) -> None:
            recorder.started(event.name or str(event.id), str(event.id), str(event.runId))

        def onQueryProgress(self, event: Any) -> None:
            p = event.progress
            recorder.progress(p.name or str(p.id), p)

        def onQueryIdle(self, event: Any) -> None:
            for name, q in list(recorder.record.queries.items()):
                if q.id == str(event.id):
                    recorder.idle(name)

        def onQueryTerminated(self, event: Any) -> None:
            for name, q in list(recorder.record.queries.items()):
                if q.id == str(event.id):
                    recorder.terminated(name, event.exception)

    return ProgressListener()


class FeastPusher:
    """``foreachBatch`` function of the online query: push the latest row per vehicle."""

    def __init__(self, cfg: StreamJobConfig, recorder: ProgressRecorder) -> None:
        from nuro_ml.exceptions import FeatureStoreError
        from nuro_ml.features.config import FeastSettings

        assert cfg.feature_repo
        self.push_source = cfg.push_source
        self.recorder = recorder
        self.store = FeastSettings.from_env().resolve(Path(cfg.feature_repo)).feature_store()
        # Fail when the stream starts, not at its first push, if the repository cannot take it.
        pushed = [
            v.name
            for v in self.store.list_feature_views()
            if v.stream_source is not None and v.stream_source.name == self.push_source
        ]
        if not pushed:
            raise FeatureStoreError(
                f"feature repository {cfg.feature_repo} has no feature view fed by push source "
                f"{self.push_source!r}; add nuro_ml.features.stream_views to it and run feast apply"
            )

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        from feast.data_source import PushMode

        frame: pd.DataFrame = batch.toPandas()
        if frame.empty:
            return
        latest = latest_per_vehicle(frame)
        self.store.push(self.push_source, latest[list(ONLINE_COLUMNS)], to=PushMode.ONLINE)
        readable = time.time()
        figures = self.recorder.freshness(
            np.maximum(readable - _epoch_seconds(frame["arrived_at"]), 0.0), frame["origin"].to_numpy()
        )
        log.info(
            "Online batch %d: %d rows, %d vehicles pushed; freshness p95 %.2f s (window p95 %.2f s)",
            batch_id,
            len(frame),
            len(latest),
            figures.get("batch_p95_seconds", 0.0),
            figures.get("p95_seconds", 0.0),
        )


def _epoch_seconds(values: pd.Series) -> np.ndarray:
    import pandas as pd

    stamps = pd.to_datetime(values, utc=True)
    return (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()


class StreamJob:
    """Starts the queries of one stream over a session and supervises them in the driver."""

    def __init__(self, spark: SparkSession, cfg: StreamJobConfig, pid: int) -> None:
        self.spark = spark
        self.cfg = cfg
        self.recorder = ProgressRecorder(cfg, pid)
        self.recorder.record.app_id = spark.sparkContext.applicationId
        self.queries: list[StreamingQuery] = []
        self.listener: Any = None

    def start(self) -> list[StreamingQuery]:
        cfg = self.cfg
        register_sources(self.spark)
        self.listener = progress_listener(self.recorder)
        self.spark.streams.addListener(self.listener)
        self.recorder._save()
        trigger = f"{cfg.trigger_seconds} seconds"
        schemas: dict[str, Any] = {}
        if cfg.landing_path:
            for table in cfg.tables:
                rows = segment_rows(self.spark, cfg, table)
                schemas[table] = rows.schema
                self._sink(rows, table, segment_query(table), trigger)
        if cfg.redis_url:
            rows = telemetry_rows(self.spark, cfg)
            schemas[TELEMETRY_TABLE] = rows.schema
            self._sink(rows, TELEMETRY_TABLE, TELEMETRY_TABLE, trigger)
        if cfg.feature_repo:
            pusher = FeastPusher(cfg, self.recorder)
            source = online_rows(self.spark, cfg, schemas)
            self._start(
                ONLINE_QUERY,
                lambda: (
                    source.writeStream.queryName(ONLINE_QUERY)
                    .option("checkpointLocation", cfg.checkpoint(ONLINE_QUERY))
                    .trigger(processingTime=trigger)
                    .foreachBatch(pusher)
                    .start()
                ),
            )
        return self.queries

    def _start(self, name: str, launch: Callable[[], StreamingQuery]) -> StreamingQuery:
        """Start a query and wait for its first micro-batch; retry a Python runner that timed out.

        Spark gives the Python process that plans a Python source 10 s to connect back, which a
        loaded machine can miss; the query then fails before reading anything and restarting
        it from its checkpoint is safe. Starting queries one after another also keeps their
        Python runners from competing for the CPU at the same moment.
        """
        for attempt in range(1, _START_ATTEMPTS + 1):
            query = launch()
            deadline = time.monotonic() + _STARTUP_SECONDS
            while query.isActive and query.lastProgress is None and time.monotonic() < deadline:
                time.sleep(0.2)
            error = query.exception()
            if error is None:
                self.queries.append(query)
                return query
            if _CONNECT_BACK not in str(error) or attempt == _START_ATTEMPTS:
                raise RuntimeError(f"stream query {name} failed to start: {error}")
            log.warning("Stream query %s: Python runner did not connect back; retrying (%d)", name, attempt)
        raise AssertionError("unreachable")

    def _sink(self, rows: DataFrame, table: str, name: str, trigger: str) -> None:
        from nuro_ml.etl.sink_log import remove_uncommitted

        # Nothing writes here yet: files of a batch the last driver never committed go now, so
        # the table holds every row exactly once for any reader (Spark rewrites that batch).
        remove_uncommitted(self.cfg.table_path(table))
        self._start(
            name,
            lambda: (
                rows.writeStream.queryName(name)
                .format("parquet")
                .option("path", str(self.cfg.table_path(table)))
                .option("checkpointLocation", self.cfg.checkpoint(name))
                .outputMode("append")
                .trigger(processingTime=trigger)
                .start()
            ),
        )
        # The online query reads this table through the sink's metadata log, which must exist
        # before that reader first lists the folder (or it would take every file as committed).
        # The sink creates it when the query starts.
        metadata = self.cfg.table_path(table) / "_spark_metadata"
        if not metadata.is_dir():
            raise RuntimeError(f"stream query {name} started without creating {metadata}")

    def stop(self) -> None:
        for query in self.queries:
            try:
                query.stop()
            except Exception:  # stopping the others matters more than this one's error
                log.exception("Stopping stream query %s failed", query.name)
        if self.listener is not None:
            self.spark.streams.removeListener(self.listener)
            self.listener = None

    def wait(self) -> int:
        """Block until a query ends; an error in one stops the others. Returns the exit code."""
        self.spark.streams.awaitAnyTermination()
        failed = [q for q in self.queries if q.exception() is not None]
        self.stop()
        for query in failed:
            log.error("Stream query %s failed: %s", query.name, query.exception())
        return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    import os

    parser = argparse.ArgumentParser(prog="nuro_ml.stream.job", description="telemetry stream")
    parser.add_argument("--config-json", required=True, help="the StreamJobConfig as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = StreamJobConfig(**json.loads(args.config_json))
    except (TypeError, ValueError) as err:
        print(f"nuro_ml.stream.job: bad --config-json: {err}", file=sys.stderr)
        return 2
    from nuro_ml.etl.spark_session import build_session

    spark = build_session(
        cfg.master, app_name="nuro-ml-telemetry-stream", conf=cfg.spark_conf, long_lived=True
    )
    job = StreamJob(spark, cfg, os.getpid())

    def _terminate(signum: int, frame: Any) -> None:
        log.info("Signal %d: stopping the stream's queries", signum)
        threading.Thread(target=job.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, _terminate)
    job.start()
    log.info("Stream started: queries %s", ", ".join(f"{q.name}={q.id}" for q in job.queries))
    code = job.wait()
    spark.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
