"""The MCAP -> Parquet ETL job. Runs in-process (local Spark) or as a ``spark-submit`` application.

Steps for an interval [start, end) of dates:

1. find the drive logs ``<input>/date=D/vehicle=V/*.mcap``;
2. check every file in parallel (:mod:`nuro_ml.etl.validation`); quarantine the bad ones, or fail
   with :class:`~nuro_ml.exceptions.TooManyBadFilesError` when more than the allowed share is bad
   (then nothing is moved or written); a file without an index whose damage ends a valid prefix
   (a truncated tail) is read up to the damage and quarantined after publish;
3. read each topic with the ``mcap`` data source, normalize it and write per-topic tables; derive
   ``ego_motion`` (10 Hz grid) and ``scene_stats`` (10 s scenes) per drive;
4. publish: swap each staged ``date/vehicle`` partition over the live one (:mod:`publish`).

``python -m nuro_ml.etl.job --help`` (or ``spark-submit .../job.py``) runs it from the command line;
the result (the operator's XCom value) is written to ``<output>/_runs/<run_key>.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nuro_ml.etl import inputs, publish, schemas
from nuro_ml.etl.transforms import (
    EGO_MOTION_SCHEMA,
    LIDAR_STATS_FIELDS,
    SCENE_STATS_SCHEMA,
    SRC_CAMERA,
    SRC_CAN,
    SRC_GNSS,
    SRC_IMU,
    SRC_LIDAR,
    SRC_POSE,
    TransformConfig,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

TOPIC_TABLES = ("ego_pose", "gnss_fix", "imu", "vehicle_can", "lidar_payload", "camera_payload")
DERIVED_TABLES = ("lidar_points", "camera_frames", "ego_motion", "scene_stats")
TABLES = (*TOPIC_TABLES, *DERIVED_TABLES)
STAGING_DIR = "_staging"
RUNS_DIR = "_runs"
_PATH_RE = re.compile(r"date=(\d{4}-\d{2}-\d{2})/vehicle=([^/]+)/([^/]+)\.mcap$")


def parse_when(value: str | date | datetime) -> datetime:
    """Accept a date, a datetime or an ISO string (templated values arrive as strings)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    text = str(value).strip().replace("Z", "+00:00")
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def interval_dates(start: datetime, end: datetime) -> list[date]:
    """Calendar days (UTC) overlapping [start, end): the daily partitions the interval touches."""
    if end <= start:
        raise ValueError(f"empty interval: end {end.isoformat()} is not after start {start.isoformat()}")
    first = start.astimezone(UTC).date()
    last = (end.astimezone(UTC) - timedelta(microseconds=1)).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


@dataclass
class ETLJobConfig:
    """Everything a run needs; serializable to command-line arguments for ``spark-submit``."""

    input_path: str
    output_path: str
    start: str
    end: str
    quarantine_path: str
    vehicles: list[str] | None = None
    max_bad_file_share: float = 0.2
    run_key: str = "manual"
    grid_hz: float = 10.0
    scene_seconds: float = 10.0
    hard_brake_bar: float = 45.0
    part_bytes: int = 64 << 20
    reprocess: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_args(self) -> list[str]:
        return ["--config-json", json.dumps(asdict(self))]

    @classmethod
    def from_args(cls, argv: Sequence[str]) -> ETLJobConfig:
        parser = argparse.ArgumentParser(prog="nuro_ml.etl.job", description="MCAP drive logs to Parquet")
        parser.add_argument("--config-json", help="the whole config as JSON (what the operator passes)")
        parser.add_argument("--input")
        parser.add_argument("--output")
        parser.add_argument("--start")
        parser.add_argument("--end")
        parser.add_argument("--quarantine")
        parser.add_argument("--vehicles", help="comma-separated vehicle ids")
        parser.add_argument("--max-bad-file-share", type=float, default=0.2)
        parser.add_argument("--run-key", default="manual")
        parser.add_argument(
            "--reprocess", action="store_true", help="rebuild partitions even when their logs are unchanged"
        )
        args = parser.parse_args(argv)
        if args.config_json:
            return cls(**json.loads(args.config_json))
        missing = [n for n in ("input", "output", "start", "end") if getattr(args, n) is None]
        if missing:
            parser.error(f"missing --{', --'.join(missing)}")
        return cls(
            input_path=args.input,
            output_path=args.output,
            start=args.start,
            end=args.end,
            quarantine_path=args.quarantine or str(Path(args.input).parent / "quarantine"),
            vehicles=args.vehicles.split(",") if args.vehicles else None,
            max_bad_file_share=args.max_bad_file_share,
            run_key=args.run_key,
            reprocess=args.reprocess,
        )


def discover(cfg: ETLJobConfig) -> list[str]:
    """The interval's drive logs, sorted."""
    root = Path(cfg.input_path)
    wanted = set(cfg.vehicles) if cfg.vehicles else None
    files: list[str] = []
    for day in interval_dates(parse_when(cfg.start), parse_when(cfg.end)):
        day_dir = root / f"date={day:%Y-%m-%d}"
        if not day_dir.is_dir():
            continue
        for vdir in sorted(day_dir.glob("vehicle=*")):
            if wanted is not None and vdir.name.split("=", 1)[1] not in wanted:
                continue
            files.extend(str(p) for p in sorted(vdir.glob("*.mcap")) if not p.name.startswith("."))
    return files


def path_keys(path: str) -> tuple[str, str, str]:
    """(date, vehicle_id, drive_id) from a path in the raw layout."""
    m = _PATH_RE.search(path.replace(os.sep, "/"))
    if not m:
        raise ValueError(f"{path} is not under date=YYYY-MM-DD/vehicle=<id>/<drive_id>.mcap")
    return m.group(1), m.group(2), m.group(3)


def _inspect(path: str) -> dict[str, Any]:
    from nuro_ml.etl.validation import inspect_file

    return inspect_file(path).to_dict()


class ETLRun:
    """One run of the job over a Spark session.

    :param spark: the session, or a function that starts one; it is only called when some
        partition needs building, so a run over up-to-date partitions never starts Spark.
    """

    def __init__(
        self,
        spark: SparkSession | Callable[[], SparkSession],
        cfg: ETLJobConfig,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self._spark_source = spark
        self._spark: SparkSession | None = None
        self.cfg = cfg
        self.progress = progress or (lambda msg: log.info("%s", msg))
        self.output = Path(cfg.output_path)
        self.staging = self.output / STAGING_DIR / re.sub(r"[^A-Za-z0-9_.-]", "_", cfg.run_key)
        #: Damaged inputs read up to their damage (see :mod:`nuro_ml.etl.validation`).
        self._salvaged: set[str] = set()
        self.transform_cfg = TransformConfig(
            grid_hz=cfg.grid_hz, scene_seconds=cfg.scene_seconds, hard_brake_bar=cfg.hard_brake_bar
        )

    @property
    def spark(self) -> SparkSession:
        if self._spark is None:
            source = self._spark_source
            self._spark = source() if callable(source) else source
        return self._spark

    @property
    def _settings(self) -> dict[str, Any]:
        # What shapes the rows of a partition besides its logs (see nuro_ml.etl.inputs).
        return {"tables": list(TABLES), **asdict(self.transform_cfg)}

    def _up_to_date(self, files: list[str]) -> dict[tuple[str, str], inputs.PartitionRecord]:
        """Partitions whose logs and settings match their record and whose output is intact."""
        if self.cfg.reprocess:
            return {}
        by_partition: dict[tuple[str, str], list[str]] = {}
        for path in files:
            day, vehicle, _ = path_keys(path)
            by_partition.setdefault((day, vehicle), []).append(path)
        fresh = {}
        for (day, vehicle), paths in by_partition.items():
            record = inputs.PartitionRecord.read(self.output, day, vehicle)
            if (
                record is not None
                and record.fingerprint == inputs.fingerprint(paths, self._settings)
                and record.matches_output(self.output, TABLES, day, vehicle)
            ):
                fresh[(day, vehicle)] = record
        return fresh

    def run(self) -> dict[str, Any]:
        from nuro_ml.etl.validation import FileReport
        from nuro_ml.exceptions import TooManyBadFilesError

        t_start = time.monotonic()
        files = discover(self.cfg)
        self.progress(
            f"ETL {self.cfg.start} .. {self.cfg.end}: {len(files)} input files under {self.cfg.input_path}"
        )
        result: dict[str, Any] = {
            "files": 0,
            "bytes": 0,
            "messages": {},
            "rows": {},
            "partitions": [],
            "up_to_date": [],
            "quarantined": [],
        }
        fresh = self._up_to_date(files)
        if fresh:
            for record in fresh.values():
                _add_counts(result["messages"], record.messages)
                _add_counts(result["rows"], record.rows)
            fresh_files = [f for f in files if path_keys(f)[:2] in fresh]
            result["files"] = len(fresh_files)
            result["bytes"] = sum(os.path.getsize(f) for f in fresh_files)
            result["up_to_date"] = sorted(f"date={d}/vehicle={v}" for d, v in fresh)
            self.progress(
                f"{len(fresh)} date/vehicle partitions are up to date with their {len(fresh_files)} "
                "logs; not rebuilt (reprocess=True rebuilds them)"
            )
            files = [f for f in files if path_keys(f)[:2] not in fresh]
        if not files:
            result["partitions"] = result["up_to_date"]
            self._write_result(result)
            return result
        sc = self.spark.sparkContext
        slices = max(1, min(len(files), sc.defaultParallelism * 2))
        reports = [FileReport(**r) for r in sc.parallelize(files, slices).map(_inspect).collect()]
        bad = [r for r in reports if not r.ok]
        good = [r for r in reports if r.ok]
        total_bytes = sum(r.bytes for r in reports)
        self.progress(
            f"checked {len(reports)} files ({total_bytes / 1e6:.1f} MB): {len(good)} good, {len(bad)} bad"
        )
        if bad and len(bad) / len(reports) > self.cfg.max_bad_file_share:
            details = "; ".join(f"{r.file}: {r.reason} (offset {r.offset})" for r in bad)
            raise TooManyBadFilesError(
                f"{len(bad)} of {len(reports)} input files are bad, more than the allowed share "
                f"{self.cfg.max_bad_file_share:.0%}; nothing was moved or written: {details}"
            )
        # Damaged files whose messages before the damage are valid: read up to the damage, then
        # quarantined once those messages are published.
        salvaged = [r for r in bad if r.salvaged]
        for r in bad:
            if not r.salvaged:
                self._quarantine(r, result)
        for r in salvaged:
            r.messages = dict(r.salvaged)
        self._salvaged = {r.file for r in salvaged}
        readable = good + salvaged
        records: dict[tuple[str, str], inputs.PartitionRecord] = {}
        for r in readable:
            day, vehicle, drive = path_keys(r.file)
            record = records.setdefault((day, vehicle), inputs.PartitionRecord(fingerprint="", drives=[]))
            record.drives.append(drive)
            _add_counts(record.messages, r.messages)
            _add_counts(result["messages"], r.messages)
        result["files"] += len(readable)
        result["bytes"] += sum(r.bytes for r in readable)
        self.progress(f"messages per topic: {json.dumps(result['messages'], sort_keys=True)}")
        if not readable:
            result["partitions"] = result["up_to_date"]
            self._write_result(result)
            return result

        partitions = {key: set(record.drives) for key, record in records.items()}
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(parents=True)
        try:
            self._write_topic_tables(readable)
            self._write_derived_tables()
            for t in TABLES:
                if n := self._staged_rows(t):
                    result["rows"][t] = result["rows"].get(t, 0) + n
            self.progress(f"rows per table: {json.dumps(result['rows'], sort_keys=True)}")
            inputs.forget(self.output, records)
            publish.publish(self.output, self.staging, TABLES, partitions)
        finally:
            shutil.rmtree(self.staging, ignore_errors=True)
        for r in salvaged:
            self._quarantine(r, result)
        for (day, vehicle), record in records.items():
            # Bad logs were moved to quarantine: the record covers the logs the next run will find.
            paths = [r.file for r in good if path_keys(r.file)[:2] == (day, vehicle)]
            record.fingerprint = inputs.fingerprint(paths, self._settings)
            record.drives.sort()
            # Published rows, which include rows carried over from drives this run did not read.
            record.rows = {
                t: n
                for t in TABLES
                if (n := publish.count_rows(publish.partition_dir(self.output, t, day, vehicle)))
            }
            record.write(self.output, day, vehicle)
        result["partitions"] = sorted([f"date={d}/vehicle={v}" for d, v in partitions] + result["up_to_date"])
        self.progress(
            f"published {len(partitions)} date/vehicle partitions of {len(TABLES)} tables "
            f"in {time.monotonic() - t_start:.1f}s"
        )
        self._write_result(result)
        return result

    def _quarantine(self, report: Any, result: dict[str, Any]) -> None:
        from nuro_ml.etl.validation import quarantine

        cfg = self.cfg
        entry = quarantine(report, Path(cfg.input_path), Path(cfg.quarantine_path), cfg.run_key)
        if report.salvaged:
            log.warning(
                "Quarantined %s: %s (offset %s); its %d messages before the damage were kept",
                report.file,
                report.reason,
                report.offset,
                sum(report.salvaged.values()),
            )
        else:
            log.warning("Quarantined %s: %s (offset %s)", report.file, report.reason, report.offset)
        result["quarantined"].append(entry)

    def _write_result(self, result: dict[str, Any]) -> None:
        runs = self.output / RUNS_DIR
        runs.mkdir(parents=True, exist_ok=True)
        path = runs / f"{self.staging.name}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(result, sort_keys=True))
        os.replace(tmp, path)

    def _staged_rows(self, table: str) -> int:
        root = self.staging / table
        if not root.is_dir():
            return 0
        return sum(publish.count_rows(p) for p in root.glob("date=*/vehicle=*"))

    # -- reading and normalizing topics ------------------------------------------------------

    def _read(self, paths: list[str], topic: str, columns: list[str]) -> DataFrame:
        from pyspark.sql import functions as F

        df = (
            self.spark.read.format("mcap")
            .option("paths", json.dumps(paths))
            .option("topics", topic)
            .option("columns", ",".join(["file", "log_time", "log_time_ns", *columns]))
            .option("partitionBytes", str(self.cfg.part_bytes))
            # A file may only end early where the check found it damaged (and kept what precedes).
            .option("onDamage", "stop" if self._salvaged.issuperset(paths) else "fail")
            .load()
        )
        path_col = F.regexp_replace(F.col("file"), r"\\", "/")
        return (
            df.withColumn("date", F.regexp_extract(path_col, r"date=(\d{4}-\d{2}-\d{2})/", 1))
            .withColumn("vehicle_id", F.regexp_extract(path_col, r"vehicle=([^/]+)/", 1))
            .withColumn("drive_id", F.regexp_extract(path_col, r"/([^/]+)\.mcap$", 1))
            .withColumn("vehicle", F.col("vehicle_id"))
        )

    def _topic_frame(self, good: list[Any], topic: str) -> DataFrame | None:
        from pyspark.sql import functions as F

        by_schema: dict[tuple[str, bool], list[str]] = {}
        for r in good:
            if r.messages.get(topic):
                by_schema.setdefault((r.schemas[topic], bool(r.salvaged)), []).append(r.file)
        frames = []
        for _, paths in sorted(by_schema.items()):
            keys = [
                F.col(c) for c in ("date", "vehicle", "vehicle_id", "drive_id", "log_time", "log_time_ns")
            ]
            if topic == schemas.TOPIC_POSE:
                df = self._read(
                    paths,
                    topic,
                    [
                        "frame_id",
                        *(f"pose_position_{a}" for a in "xyz"),
                        *(f"pose_orientation_{a}" for a in "xyzw"),
                    ],
                )
                qx, qy, qz, qw = (F.col(f"pose_orientation_{a}") for a in "xyzw")
                df = df.select(
                    *keys,
                    F.col("frame_id"),
                    *(F.col(f"pose_position_{a}").alias(f"{a}_m") for a in "xyz"),
                    qx.alias("qx"),
                    qy.alias("qy"),
                    qz.alias("qz"),
                    qw.alias("qw"),
                    F.atan2(2 * (qw * qz + qx * qy), 1 - 2 * (qy * qy + qz * qz)).alias("yaw_rad"),
                )
            elif topic == schemas.TOPIC_GNSS:
                df = self._read(
                    paths,
                    topic,
                    ["latitude", "longitude", "altitude", "position_covariance", "position_covariance_type"],
                )
                cov = F.col("position_covariance")
                df = df.select(
                    *keys,
                    "latitude",
                    "longitude",
                    F.col("altitude").alias("altitude_m"),
                    F.sqrt((F.element_at(cov, 1) + F.element_at(cov, 5)) / 2).alias("h_std_m"),
                    F.col("position_covariance_type").alias("covariance_type"),
                    (F.col("position_covariance_type") != 0).alias("fix_valid"),
                )
            elif topic == schemas.TOPIC_IMU:
                cols = [
                    *(f"orientation_{a}" for a in "xyzw"),
                    *(f"angular_velocity_{a}" for a in "xyz"),
                    *(f"linear_acceleration_{a}" for a in "xyz"),
                ]
                df = self._read(paths, topic, cols).select(*keys, *cols)
            elif topic == schemas.TOPIC_CAN:
                df = self._read(
                    paths,
                    topic,
                    ["speed_mps", "steering_angle_rad", "throttle", "brake_pressure_bar", "gear"],
                )
                df = df.select(
                    *keys,
                    "speed_mps",
                    "steering_angle_rad",
                    "throttle",
                    "brake_pressure_bar",
                    F.col("gear").cast("int"),
                )
            elif topic == schemas.TOPIC_LIDAR:
                df = self._read(paths, topic, ["frame_id", "point_stride", "fields", "data"])
                df = df.select(
                    *keys,
                    "file",
                    "frame_id",
                    F.col("point_stride").cast("long").alias("point_stride"),
                    "fields",
                    "data",
                )
                df = _with_lidar_stats(df)
            else:
                df = self._read(paths, topic, ["frame_id", "format", "data"])
                df = df.select(
                    *keys,
                    "file",
                    "frame_id",
                    "format",
                    F.length("data").cast("long").alias("payload_bytes"),
                    "data",
                )
            frames.append(df)
        if not frames:
            return None
        out = frames[0]
        for other in frames[1:]:
            out = out.unionByName(other)
        return out

    def _write_staged(self, df: DataFrame, table: str) -> None:
        df.write.mode("overwrite").partitionBy("date", "vehicle").parquet(str(self.staging / table))

    def _read_staged(self, table: str) -> DataFrame | None:
        path = self.staging / table
        if not path.is_dir():
            return None
        return self.spark.read.option("basePath", str(path)).parquet(str(path))

    def _write_topic_tables(self, good: list[Any]) -> None:
        for topic, spec in schemas.TOPICS.items():
            table = {"lidar_points": "lidar_payload", "camera_frames": "camera_payload"}.get(
                spec.table, spec.table
            )
            df = self._topic_frame(good, topic)
            if df is None:
                continue
            t0 = time.monotonic()
            self._write_staged(df, table)
            self.progress(f"wrote {table} ({topic}) in {time.monotonic() - t0:.1f}s")
        for payload, refs in (("lidar_payload", "lidar_points"), ("camera_payload", "camera_frames")):
            df = self._read_staged(payload)
            if df is not None:
                self._write_staged(df.drop("data"), refs)

    # -- derived tables ------------------------------------------------------------------------

    def _signals(self) -> DataFrame | None:
        from pyspark.sql import functions as F

        def narrow(table: str, src: int, a: Any, b: Any = None, c: Any = None) -> DataFrame | None:
            df = self._read_staged(table)
            if df is None:
                return None
            zero = F.lit(0.0)
            return df.select(
                "date",
                "vehicle_id",
                "drive_id",
                F.lit(src).alias("src"),
                F.col("log_time_ns").alias("t_ns"),
                a.cast("double").alias("a"),
                (b if b is not None else zero).cast("double").alias("b"),
                (c if c is not None else zero).cast("double").alias("c"),
            )

        parts = [
            narrow("ego_pose", SRC_POSE, F.col("x_m"), F.col("y_m"), F.col("yaw_rad")),
            narrow(
                "vehicle_can",
                SRC_CAN,
                F.col("speed_mps"),
                F.col("brake_pressure_bar"),
                F.col("steering_angle_rad"),
            ),
            narrow(
                "imu",
                SRC_IMU,
                F.col("angular_velocity_z"),
                F.col("linear_acceleration_x"),
                F.col("linear_acceleration_y"),
            ),
            narrow("gnss_fix", SRC_GNSS, F.col("fix_valid"), F.col("h_std_m")),
            narrow("lidar_points", SRC_LIDAR, F.col("point_count")),
            narrow("camera_frames", SRC_CAMERA, F.lit(1.0)),
        ]
        present = [p for p in parts if p is not None]
        if not present:
            return None
        out = present[0]
        for p in present[1:]:
            out = out.unionByName(p)
        return out

    def _write_derived_tables(self) -> None:
        import pyarrow as pa
        from pyspark.sql.pandas.types import from_arrow_schema

        signals = self._signals()
        if signals is None:
            return
        cfg = self.transform_cfg
        created_us = int(time.time() * 1_000_000)
        extra = [pa.field("date", pa.string()), pa.field("vehicle", pa.string())]
        ego_schema = pa.schema([*EGO_MOTION_SCHEMA, *extra])
        scene_schema = pa.schema([*SCENE_STATS_SCHEMA, *extra])
        grouped = signals.groupBy("date", "vehicle_id", "drive_id")
        ego = grouped.applyInArrow(
            _grouped(_ego_motion, ego_schema, cfg, created_us),
            from_arrow_schema(ego_schema, prefer_timestamp_ntz=False),
        )
        self._write_staged(ego.repartition("date", "vehicle"), "ego_motion")
        scenes = grouped.applyInArrow(
            _grouped(_scene_stats, scene_schema, cfg, created_us),
            from_arrow_schema(scene_schema, prefer_timestamp_ntz=False),
        )
        self._write_staged(scenes.repartition("date", "vehicle"), "scene_stats")
        self.progress("wrote ego_motion and scene_stats")


def _ego_motion(table: Any, vehicle: str, drive: str, cfg: TransformConfig, created_us: int) -> Any:
    from nuro_ml.etl.transforms import ego_motion

    return ego_motion(table, vehicle, drive, cfg)


def _scene_stats(table: Any, vehicle: str, drive: str, cfg: TransformConfig, created_us: int) -> Any:
    from nuro_ml.etl.transforms import scene_stats

    return scene_stats(table, vehicle, drive, created_us, cfg)


def _grouped(
    fn: Callable[..., Any], schema: Any, cfg: TransformConfig, created_us: int
) -> Callable[[Any, Any], Any]:
    def apply(key: Any, table: Any) -> Any:
        import pyarrow as pa

        day, vehicle, drive = (k.as_py() for k in key)
        out = fn(table, vehicle, drive, cfg, created_us)
        n = out.num_rows
        out = out.append_column("date", pa.array([day] * n, pa.string()))
        out = out.append_column("vehicle", pa.array([vehicle] * n, pa.string()))
        return out.cast(schema)

    return apply


def _with_lidar_stats(df: DataFrame) -> DataFrame:
    import pyarrow as pa
    from pyspark.sql.pandas.types import from_arrow_schema

    in_schema = df.schema
    stats_fields = [pa.field(n, t) for n, t in LIDAR_STATS_FIELDS]

    def add_stats(batches: Any) -> Any:
        from nuro_ml.etl.transforms import lidar_stats

        for batch in batches:
            stats = lidar_stats(batch.column("data"), batch.column("point_stride"), batch.column("fields"))
            cols = [batch.column(i) for i in range(batch.num_columns) if batch.schema.names[i] != "data"]
            names = [n for n in batch.schema.names if n != "data"]
            yield pa.RecordBatch.from_arrays(
                [*cols, *stats.values(), batch.column("data")], names=[*names, *stats.keys(), "data"]
            )

    from pyspark.sql.types import StructType

    out_fields = [f for f in in_schema.fields if f.name != "data"]
    stats_struct = from_arrow_schema(pa.schema(stats_fields), prefer_timestamp_ntz=False)
    data_field = next(f for f in in_schema.fields if f.name == "data")
    out_schema = StructType([*out_fields, *stats_struct.fields, data_field])
    return df.mapInArrow(add_stats, out_schema)


def _add_counts(total: dict[str, int], counts: dict[str, int]) -> None:
    for key, n in counts.items():
        total[key] = total.get(key, 0) + n


def run_etl(
    spark: SparkSession | Callable[[], SparkSession],
    cfg: ETLJobConfig,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the ETL for ``cfg`` on ``spark`` (a session or a function starting one, called only when
    some partition needs building); returns the result (the operator's XCom value)."""
    return ETLRun(spark, cfg, progress).run()


def result_path(output_path: str, run_key: str) -> Path:
    return Path(output_path) / RUNS_DIR / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', run_key)}.json"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``spark-submit`` and ``python -m nuro_ml.etl.job``."""
    from nuro_ml.etl.spark_session import build_session

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = ETLJobConfig.from_args(list(sys.argv[1:] if argv is None else argv))
    # Under spark-submit the launcher picks the master; run directly, the job uses local Spark.
    master = None if "PYSPARK_GATEWAY_PORT" in os.environ else "local[2]"
    sessions: list[SparkSession] = []

    def session() -> SparkSession:
        sessions.append(build_session(master, app_name=f"nuro-ml-etl-{cfg.run_key}"))
        return sessions[-1]

    try:
        result = run_etl(session, cfg)
    finally:
        for spark in sessions:
            spark.stop()
    print("NURO_ML_ETL_RESULT " + json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
