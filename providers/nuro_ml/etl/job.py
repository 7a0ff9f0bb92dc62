"""The MCAP -> Parquet ETL job. Runs in-process (local Spark) or as a ``spark-submit`` application.

Steps for an interval [start, end) of dates:

1. find the recordings by path template (:mod:`nuro_ml.etl.layout`; by default
   ``<input>/date=D/vehicle=V/*.mcap``); a missing input path or an interval without recordings is
   an error unless ``allow_empty``;
2. Spark tasks, each holding one or more files packed as Spark's file sources pack them
   (:mod:`nuro_ml.etl.file_packing`), read each file once (:mod:`nuro_ml.etl.process`): every chunk is
   decompressed, checked and decoded once, messages are routed by the topic mapping
   (:mod:`nuro_ml.etl.mapping`) to their tables, unmapped topics to generic ``topic_<name>``
   tables, and the drive's ``ego_motion`` (10 Hz grid) and ``scene_stats`` (10 s scenes) are
   derived, all written as Parquet from the worker into the run's staging directory;
3. a topic that would end in no table fails the run (nothing published); bad files are
   quarantined, or the run fails with :class:`~nuro_ml.exceptions.TooManyBadFilesError` when more
   than the allowed share is bad (then nothing is moved or published); a file without an index
   whose damage ends a valid prefix (a truncated tail) keeps that prefix and is quarantined after
   publish;
4. publish: swap each staged ``date/vehicle`` partition over the live one (:mod:`publish`).

A partition whose recordings, settings and mapping (as it applies to its vehicle) are unchanged
since it was built is not rebuilt. The result lists messages per topic, rows per table, the
route of every topic and the messages of excluded topics.

``python -m nuro_ml.etl.job --help`` (or ``spark-submit .../job.py``) runs it from the command line
(exit 2 for a bad argument, 1 for a failed run, no traceback); the result (the operator's XCom
value) is written to ``<output>/_runs/<run_key>.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nuro_ml.etl import inputs, layout, mapping, publish
from nuro_ml.etl.transforms import TransformConfig
from nuro_ml.task_key import FILE_NAME, slug

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

TOPIC_TABLES = tuple(mapping.CANONICAL_COLUMNS)
DERIVED_TABLES = mapping.DERIVED_TABLES
TABLES = (*TOPIC_TABLES, *DERIVED_TABLES)
STAGING_DIR = "_staging"
RUNS_DIR = "_runs"


def parse_when(value: str | date | datetime) -> datetime:
    """Accept a date, a datetime or an ISO string (templated values arrive as strings)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    text = str(value).strip().replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as err:
        raise ValueError(
            f"{value!r} is not a date or time ({err}); expected ISO 8601, e.g. 2025-11-24 or "
            "2025-11-24T16:00:00+00:00"
        ) from None
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
    #: Topic mapping file (YAML or JSON); empty: the built-in mapping.
    mapping_path: str | None = None
    #: An interval without logs is a logged skip instead of an error.
    allow_empty: bool = False
    #: Where recordings lie under the input: a preset (hive, vehicle-date, rosbag2) or a template.
    path_template: str = "hive"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_args(self) -> list[str]:
        return ["--config-json", json.dumps(asdict(self))]

    @classmethod
    def from_args(cls, argv: Sequence[str]) -> ETLJobConfig:
        """Parse the command line; a usage error exits 2 with a message naming the argument."""
        parser = argparse.ArgumentParser(prog="nuro_ml.etl.job", description="MCAP drive logs to Parquet")
        parser.add_argument("--config-json", help="the whole config as JSON (what the operator passes)")
        parser.add_argument(
            "--input", help="root of the drive logs: <input>/date=YYYY-MM-DD/vehicle=<id>/*.mcap"
        )
        parser.add_argument("--output", help="root of the Parquet tables")
        parser.add_argument("--start", help="interval start, ISO 8601 (2025-11-24 or 2025-11-24T16:00:00Z)")
        parser.add_argument("--end", help="interval end (exclusive), ISO 8601")
        parser.add_argument("--quarantine", help="where bad logs are moved (default: <input>/../quarantine)")
        parser.add_argument("--vehicles", help="comma-separated vehicle ids")
        parser.add_argument("--max-bad-file-share", type=float, default=0.2)
        parser.add_argument("--run-key", default="manual")
        parser.add_argument("--mapping", help="topic mapping file (YAML/JSON); default: the built-in mapping")
        parser.add_argument(
            "--path-template",
            default="hive",
            help="where recordings lie under --input: hive (date={date}/vehicle={vehicle}/{drive}.mcap), "
            "vehicle-date, rosbag2, or a template with {date}, {date:%%Y_%%m_%%d}, {vehicle}, {drive}, *, **",
        )
        parser.add_argument(
            "--allow-empty", action="store_true", help="an interval without logs is a skip, not an error"
        )
        parser.add_argument(
            "--reprocess", action="store_true", help="rebuild partitions even when their logs are unchanged"
        )
        args = parser.parse_args(argv)
        if args.config_json:
            try:
                cfg = cls(**json.loads(args.config_json))
            except (ValueError, TypeError) as err:
                parser.error(f"argument --config-json: not a valid job config: {err}")
        else:
            missing = [n for n in ("input", "output", "start", "end") if getattr(args, n) is None]
            if missing:
                parser.error(f"the following arguments are required: --{', --'.join(missing)}")
            cfg = cls(
                input_path=args.input,
                output_path=args.output,
                start=args.start,
                end=args.end,
                quarantine_path=args.quarantine or str(Path(args.input).parent / "quarantine"),
                vehicles=args.vehicles.split(",") if args.vehicles else None,
                max_bad_file_share=args.max_bad_file_share,
                run_key=args.run_key,
                reprocess=args.reprocess,
                mapping_path=args.mapping,
                allow_empty=args.allow_empty,
                path_template=args.path_template,
            )
        problem = cfg.problem()
        if problem:
            parser.error(f"argument {problem[0]}: {problem[1]}")
        return cfg

    def problem(self) -> tuple[str, str] | None:
        """The first bad argument as (its command-line name, what is wrong and the accepted form)."""
        for name, value in (("--start", self.start), ("--end", self.end)):
            try:
                parse_when(value)
            except ValueError as err:
                return name, str(err)
        try:
            interval_dates(parse_when(self.start), parse_when(self.end))
        except ValueError as err:
            return "--end", str(err)
        if not 0.0 <= self.max_bad_file_share <= 1.0:
            return "--max-bad-file-share", f"{self.max_bad_file_share} is not a share between 0 and 1"
        if not Path(self.input_path).exists():
            return "--input", f"{self.input_path} does not exist"
        try:
            layout.PathTemplate.of(self.path_template).match("x.mcap")
        except layout.LayoutError as err:
            return "--path-template", str(err)
        return None


def discover(cfg: ETLJobConfig) -> list[layout.Placed]:
    """The interval's drive logs with their partition keys, sorted by path."""
    from nuro_ml.exceptions import ETLInputNotFoundError

    root = Path(cfg.input_path)
    if not root.is_dir():
        raise ETLInputNotFoundError(
            f"input path {cfg.input_path} does not exist or is not a directory "
            f"(expected {layout.PathTemplate.of(cfg.path_template).text} under it)"
        )
    days = set(interval_dates(parse_when(cfg.start), parse_when(cfg.end)))
    return layout.PathTemplate.of(cfg.path_template).discover(root, days, set(cfg.vehicles or []) or None)


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
        self.staging = self.output / STAGING_DIR / slug(cfg.run_key, FILE_NAME)
        #: Recordings of the interval by path, with their partition keys.
        self.placed: dict[str, layout.Placed] = {}
        #: The topic mapping; loaded before anything is read, so a bad file fails the run at once.
        self.mapping = mapping.load(cfg.mapping_path)
        self.transform_cfg = TransformConfig(
            grid_hz=cfg.grid_hz, scene_seconds=cfg.scene_seconds, hard_brake_bar=cfg.hard_brake_bar
        )

    @property
    def spark(self) -> SparkSession:
        if self._spark is None:
            source = self._spark_source
            self._spark = source() if callable(source) else source
        return self._spark

    def _keys(self, path: str) -> tuple[str, str, str]:
        """(date, vehicle, drive) of a discovered recording."""
        placed = self.placed[path]
        return placed.day, placed.vehicle, placed.drive

    def _settings(self, vehicle: str) -> dict[str, Any]:
        # What shapes the rows of a partition besides its logs (see nuro_ml.etl.inputs): the
        # transforms and the mapping as it applies to this vehicle (overrides included).
        return {
            "tables": list(TABLES),
            **asdict(self.transform_cfg),
            "mapping": self.mapping.digest_for(vehicle),
        }

    def _up_to_date(self, files: list[str]) -> dict[tuple[str, str], inputs.PartitionRecord]:
        """Partitions whose logs and settings match their record and whose output is intact."""
        if self.cfg.reprocess:
            return {}
        by_partition: dict[tuple[str, str], list[str]] = {}
        for path in files:
            day, vehicle, _ = self._keys(path)
            by_partition.setdefault((day, vehicle), []).append(path)
        fresh = {}
        for (day, vehicle), paths in by_partition.items():
            record = inputs.PartitionRecord.read(self.output, day, vehicle)
            if (
                record is not None
                and record.fingerprint == inputs.fingerprint(paths, self._settings(vehicle))
                and record.matches_output(self.output, sorted(set(TABLES) | set(record.rows)), day, vehicle)
            ):
                fresh[(day, vehicle)] = record
        return fresh

    def run(self) -> dict[str, Any]:
        from nuro_ml.exceptions import TooManyBadFilesError
        from nuro_ml.exceptions import UnmappedTopicError as UnmappedTopic

        t_start = time.monotonic()
        self.placed = {p.path: p for p in discover(self.cfg)}
        files = list(self.placed)
        self.progress(
            f"ETL {self.cfg.start} .. {self.cfg.end}: {len(files)} input files under {self.cfg.input_path}"
        )
        result: dict[str, Any] = {
            "files": 0,
            "bytes": 0,
            "messages": {},
            "rows": {},
            "excluded": {},
            "routes": {},
            "mapping": self.mapping.name,
            "partitions": [],
            "up_to_date": [],
            "quarantined": [],
        }
        if not files:
            self._no_logs(result)
            return result
        fresh = self._up_to_date(files)
        if fresh:
            for record in fresh.values():
                _add_counts(result["messages"], record.messages)
                _add_counts(result["rows"], record.rows)
            fresh_files = [f for f in files if self._keys(f)[:2] in fresh]
            result["files"] = len(fresh_files)
            result["bytes"] = sum(os.path.getsize(f) for f in fresh_files)
            result["up_to_date"] = sorted(f"date={d}/vehicle={v}" for d, v in fresh)
            self.progress(
                f"{len(fresh)} date/vehicle partitions are up to date with their {len(fresh_files)} "
                "logs; not rebuilt (reprocess=True rebuilds them)"
            )
            files = [f for f in files if self._keys(f)[:2] not in fresh]
        if not files:
            result["partitions"] = result["up_to_date"]
            self._write_result(result)
            return result
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(parents=True)
        try:
            reports = self._process(files)
            total_bytes = sum(r.bytes for r in reports)
            unmapped = sorted({m for r in reports if r.unmapped for m in r.unmapped.split(" | ")})
            if unmapped:
                raise UnmappedTopic(
                    f"{len(unmapped)} topic(s) would be silently dropped; nothing was written: "
                    + " | ".join(unmapped)
                )
            bad = [r for r in reports if not r.ok]
            good = [r for r in reports if r.ok]
            self.progress(
                f"read {len(reports)} files ({total_bytes / 1e6:.1f} MB) in one pass: "
                f"{len(good)} good, {len(bad)} bad"
            )
            if bad and len(bad) / len(reports) > self.cfg.max_bad_file_share:
                details = "; ".join(f"{r.file}: {r.reason} (offset {r.offset})" for r in bad)
                raise TooManyBadFilesError(
                    f"{len(bad)} of {len(reports)} input files are bad, more than the allowed share "
                    f"{self.cfg.max_bad_file_share:.0%}; nothing was moved or written: {details}"
                )
            # Damaged files whose messages before the damage are valid were read up to the damage;
            # they go to quarantine once those messages are published.
            salvaged = [r for r in bad if r.salvaged]
            for r in bad:
                if not r.salvaged:
                    self._quarantine(r, result)
            for r in salvaged:
                r.messages = dict(r.salvaged)
            readable = good + salvaged
            records: dict[tuple[str, str], inputs.PartitionRecord] = {}
            for r in readable:
                day, vehicle, drive = self._keys(r.file)
                record = records.setdefault((day, vehicle), inputs.PartitionRecord(fingerprint="", drives=[]))
                record.drives.append(drive)
                _add_counts(record.messages, r.messages)
                _add_counts(result["messages"], r.messages)
                for topic, table in r.routes.items():
                    result["routes"][topic] = table
                    if table is None:
                        result["excluded"][topic] = result["excluded"].get(topic, 0) + r.messages.get(
                            topic, 0
                        )
            result["files"] += len(readable)
            result["bytes"] += sum(r.bytes for r in readable)
            self.progress(f"messages per topic: {json.dumps(result['messages'], sort_keys=True)}")
            if result["excluded"]:
                excluded = json.dumps(result["excluded"], sort_keys=True)
                self.progress(f"excluded by mapping {self.mapping.name}: {excluded}")
            if not readable:
                result["partitions"] = result["up_to_date"]
                self._write_result(result)
                return result
            partitions = {key: set(record.drives) for key, record in records.items()}
            tables = self._tables()
            for t in tables:
                if n := self._staged_rows(t):
                    result["rows"][t] = result["rows"].get(t, 0) + n
            self.progress(f"rows per table: {json.dumps(result['rows'], sort_keys=True)}")
            inputs.forget(self.output, records)
            publish.publish(self.output, self.staging, tables, partitions)
        finally:
            shutil.rmtree(self.staging, ignore_errors=True)
        for r in salvaged:
            self._quarantine(r, result)
        for (day, vehicle), record in records.items():
            # Bad logs were moved to quarantine: the record covers the logs the next run will find.
            paths = [r.file for r in good if self._keys(r.file)[:2] == (day, vehicle)]
            record.fingerprint = inputs.fingerprint(paths, self._settings(vehicle))
            record.drives.sort()
            # Published rows, which include rows carried over from drives this run did not read.
            record.rows = {
                t: n
                for t in tables
                if (n := publish.count_rows(publish.partition_dir(self.output, t, day, vehicle)))
            }
            record.write(self.output, day, vehicle)
        result["partitions"] = sorted([f"date={d}/vehicle={v}" for d, v in partitions] + result["up_to_date"])
        self.progress(
            f"published {len(partitions)} date/vehicle partitions of {len(tables)} tables "
            f"in {time.monotonic() - t_start:.1f}s"
        )
        self._write_result(result)
        return result

    def _no_logs(self, result: dict[str, Any]) -> None:
        from nuro_ml.exceptions import NoLogsInIntervalError

        where = (
            f"no drive logs for the interval {self.cfg.start} .. {self.cfg.end} under "
            f"{self.cfg.input_path}"
            + (f" for vehicles {','.join(self.cfg.vehicles)}" if self.cfg.vehicles else "")
            + " (expected <input>/date=YYYY-MM-DD/vehicle=<id>/*.mcap)"
        )
        if not self.cfg.allow_empty:
            raise NoLogsInIntervalError(
                f"{where}; pass allow_empty=True (--allow-empty) to skip such intervals"
            )
        self.progress(f"skipped: {where}")
        result["skipped"] = where
        self._write_result(result)

    def _process(self, files: list[str]) -> list[Any]:
        """Run :func:`nuro_ml.etl.process.process_file` on every file, files packed into Spark tasks
        as Spark's file sources pack them (:mod:`nuro_ml.etl.file_packing`)."""
        from nuro_ml.etl import file_packing, spark_progress
        from nuro_ml.etl.process import FileTask, process_file

        created_us = int(time.time() * 1_000_000)
        sizes = {path: os.path.getsize(path) for path in files}
        tasks = []
        for path in files:
            day, vehicle, drive = self._keys(path)
            tasks.append(
                FileTask(
                    path, day, vehicle, drive, str(self.staging), self.mapping, self.transform_cfg, created_us
                )
            )
        sc = self.spark.sparkContext
        conf = self.spark.conf
        # Largest files first (as packed), so a big file does not start last and hold up the stage.
        groups = file_packing.spark_tasks(
            tasks, lambda t: sizes[t.path], lambda key: conf.get(key, None), sc.defaultParallelism
        )
        files_done = sc.accumulator(0)

        def process_group(group: list[FileTask]) -> list[Any]:
            reports = []
            for task in group:
                reports.append(process_file(task))
                files_done.add(1)
            return reports

        progress = spark_progress.file_progress(len(tasks), self.progress)
        rdd = sc.parallelize(groups, len(groups)).flatMap(process_group)
        reports = spark_progress.collect_with_progress(rdd, progress, done=lambda: int(files_done.value))
        spark_progress.report_tables(progress, reports, sum(r.bytes for r in reports))
        return reports

    def _tables(self) -> list[str]:
        """Tables staged by this run, plus the live tables (so a partition a table lost is retired)."""
        names = {p.name for p in self.staging.iterdir() if p.is_dir()}
        if self.output.is_dir():
            names.update(
                p.name for p in self.output.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))
            )
        return sorted(names | set(TABLES))

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
    return Path(output_path) / RUNS_DIR / f"{slug(run_key, FILE_NAME)}.json"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``spark-submit`` and ``python -m nuro_ml.etl.job``."""
    from nuro_ml.etl.mapping import MappingError
    from nuro_ml.etl.spark_session import build_session
    from nuro_ml.exceptions import ETLError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = ETLJobConfig.from_args(list(sys.argv[1:] if argv is None else argv))
    try:
        mapping.load(cfg.mapping_path)
    except MappingError as err:
        print(f"nuro_ml.etl.job: error: argument --mapping: {err}", file=sys.stderr)
        return 2
    # Under spark-submit the launcher picks the master; run directly, the job uses local Spark.
    master = None if "PYSPARK_GATEWAY_PORT" in os.environ else "local[2]"
    sessions: list[SparkSession] = []

    def session() -> SparkSession:
        sessions.append(build_session(master, app_name=f"nuro-ml-etl-{cfg.run_key}"))
        return sessions[-1]

    try:
        result = run_etl(session, cfg)
    except ETLError as err:
        print(f"nuro_ml.etl.job: error: {err}", file=sys.stderr)
        return 1
    finally:
        for spark in sessions:
            spark.stop()
    print("NURO_ML_ETL_RESULT " + json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
