"""PySpark streaming data source ``mcap_landing``: MCAP segments as they land in a folder.

``spark.readStream.format("mcap_landing").option("table", "vehicle_can").load(landing)``

Segments land as ``<landing>/date=YYYY-MM-DD/vehicle=<id>/<segment>.mcap`` (the batch layout), each
written to a temporary name and renamed into place, so a listed ``*.mcap`` is complete. Every
segment is decoded by the batch ETL's own per-file pass (:func:`nuro_ml.etl.process.process_file`)
with the same topic mapping, and the rows of one mapped table come out with the segment's keys.

Offsets are positions in a manifest, an append-only file of landed paths kept next to the query's
checkpoint: a new segment gets the next position once, when Spark asks for the latest offset,
and the manifest is synced before the offset is returned. A batch replayed from the checkpoint
therefore reads the same segments, and a segment is never read by two batches.

Options:

* ``path`` (or ``load(path)``): the landing folder, or ``s3://bucket/prefix`` (required). S3 is
  reached with boto3's default credentials and endpoint (``AWS_ENDPOINT_URL_S3``); an object is
  complete once listed, and its ``LastModified`` is its landing time.
* ``manifest``: the manifest file (required; the stream job puts it under the checkpoint).
* ``table``: the mapped table to emit (one of :data:`STREAM_TABLES`; default ``vehicle_can``).
* ``mapping``: a topic mapping file; default the built-in mapping.
* ``maxFilesPerTrigger``: at most this many segments per micro-batch (default 64).

Rows: ``vehicle_id``, ``drive_id``, ``segment`` (the file's path relative to the landing folder),
``landed_at`` (the file's modification time: when it was renamed into place), then the batch
table's envelope (``topic``, ``log_time``, ``log_time_ns``, ``stamp_ns``) and mapped columns.
A segment that does not decode yields no rows and a warning naming it and the reason.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition
from pyspark.sql.pandas.types import from_arrow_schema
from pyspark.sql.streaming.datasource import SupportsTriggerAvailableNow
from pyspark.sql.types import StructType

from nuro_ml.etl import mapping as topic_mapping
from nuro_ml.etl.transforms import TransformConfig

log = logging.getLogger(__name__)

FORMAT_NAME = "mcap_landing"
DEFAULT_MAX_FILES = 64
_TS = pa.timestamp("us", tz="UTC")
_KEYS = [
    pa.field("vehicle_id", pa.string(), nullable=False),
    pa.field("drive_id", pa.string(), nullable=False),
    pa.field("segment", pa.string(), nullable=False),
    pa.field("landed_at", _TS, nullable=False),
]
_ENVELOPE = [
    pa.field("topic", pa.string()),
    pa.field("log_time", _TS),
    pa.field("log_time_ns", pa.int64()),
    pa.field("stamp_ns", pa.int64()),
]
_F64 = pa.float64()
#: The mapped tables a stream can carry, with their columns after the envelope (the batch
#: tables' types; payload tables stay batch-only: their blobs belong in the batch history).
STREAM_TABLES: dict[str, list[pa.Field]] = {
    "vehicle_can": [
        pa.field("speed_mps", _F64),
        pa.field("steering_angle_rad", _F64),
        pa.field("throttle", _F64),
        pa.field("brake_pressure_bar", _F64),
        pa.field("gear", pa.int32()),
    ],
    "ego_pose": [pa.field(name, _F64) for name in (*topic_mapping.CANONICAL_COLUMNS["ego_pose"], "yaw_rad")],
    "imu": [pa.field(name, _F64) for name in topic_mapping.CANONICAL_COLUMNS["imu"]],
}


def table_schema(table: str) -> pa.Schema:
    """The Arrow schema of the rows the source emits for ``table``."""
    if table not in STREAM_TABLES:
        raise ValueError(f"table {table!r} cannot be streamed; streamable tables: {sorted(STREAM_TABLES)}")
    return pa.schema([*_KEYS, *_ENVELOPE, *STREAM_TABLES[table]])


class Manifest:
    """Append-only list of landed segments (paths relative to the landing folder)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: list[str] = []
        self.known: set[str] = set()
        if path.exists():
            for line in path.read_text().splitlines():
                # A line cut short by a crash is the only line never covered by an offset.
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    break
                self.entries.append(entry)
                self.known.add(entry)

    def add(self, names: list[str]) -> None:
        new = [n for n in names if n not in self.known]
        if not new:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as fh:
            for name in new:
                fh.write(json.dumps(name) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.entries.extend(new)
        self.known.update(new)


def landed(root: Path) -> list[str]:
    """Complete segments under ``root``, oldest first (by modification time, then name)."""
    found = []
    for path in root.rglob("*.mcap"):
        if any(part.startswith((".", "_")) for part in path.relative_to(root).parts):
            continue
        try:
            found.append((path.stat().st_mtime_ns, path.relative_to(root).as_posix()))
        except FileNotFoundError:
            continue  # moved away between listing and stat
    return [name for _, name in sorted(found)]


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` as (bucket, prefix ending in ``/`` or empty)."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise ValueError(f"{uri!r} names no bucket; use s3://bucket/prefix")
    return bucket, (prefix.rstrip("/") + "/") if prefix else ""


def _s3_client() -> Any:
    from nuro_ml.clients.aws import AwsSettings

    # boto3's default chain: credentials and endpoint (AWS_ENDPOINT_URL_S3) from the environment
    # or the instance role, never from options that Spark would log with the plan.
    return AwsSettings().client("s3")


def landed_s3(uri: str) -> list[str]:
    """Complete segments under ``s3://bucket/prefix``, oldest first (S3 writes objects whole)."""
    bucket, prefix = split_s3(uri)
    found = []
    for page in _s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            name = obj["Key"][len(prefix) :]
            if name.endswith(".mcap") and not any(p.startswith((".", "_")) for p in name.split("/")):
                found.append((obj["LastModified"], name))
    return [name for _, name in sorted(found)]


def landed_any(root: str) -> list[str]:
    """Complete segments under a landing folder or ``s3://`` prefix."""
    if root.startswith("s3://"):
        return landed_s3(root)
    path = Path(root)
    return landed(path) if path.is_dir() else []


class Segments(InputPartition):
    """Segments (relative paths) read by one task."""

    def __init__(self, names: list[str]) -> None:
        super().__init__(names)
        self.names = names


class McapLandingDataSource(DataSource):
    """Stream MCAP segments from a landing folder; see the module docstring for options."""

    @classmethod
    def name(cls) -> str:
        return FORMAT_NAME

    def __init__(self, options: dict[str, str]) -> None:
        super().__init__(options)
        opts = {k.lower(): v for k, v in options.items()}
        if not opts.get("path"):
            raise ValueError("the mcap_landing source needs the landing folder: load(path)")
        if not opts.get("manifest"):
            raise ValueError("the mcap_landing source needs option manifest (a file next to the checkpoint)")
        self.root = opts["path"]
        self.manifest = opts["manifest"]
        self.table = opts.get("table", "vehicle_can")
        self.arrow_schema = table_schema(self.table)
        self.mapping_path = opts.get("mapping") or None
        # Fail on a bad mapping when the query starts, not inside a task.
        topic_mapping.load(self.mapping_path)
        self.max_files = int(opts.get("maxfilespertrigger", DEFAULT_MAX_FILES))
        if self.max_files < 1:
            raise ValueError(f"maxFilesPerTrigger must be at least 1, not {self.max_files}")

    def schema(self) -> StructType:
        return from_arrow_schema(self.arrow_schema, prefer_timestamp_ntz=False)

    def streamReader(self, schema: StructType) -> DataSourceStreamReader:
        return McapLandingReader(self)


class McapLandingReader(DataSourceStreamReader, SupportsTriggerAvailableNow):
    """Assigns manifest positions to new segments and decodes them one task per segment."""

    def __init__(self, source: McapLandingDataSource) -> None:
        self.root = source.root
        self.manifest_path = source.manifest
        self.table = source.table
        self.mapping_path = source.mapping_path
        self.max_files = source.max_files
        self._manifest: Manifest | None = None
        #: Manifest length an ``availableNow`` run stops at.
        self._target: int | None = None

    @property
    def manifest(self) -> Manifest:
        if self._manifest is None:
            self._manifest = Manifest(Path(self.manifest_path))
        return self._manifest

    def initialOffset(self) -> dict[str, Any]:
        return {"files": 0}

    def getDefaultReadLimit(self) -> Any:
        from pyspark.sql.streaming.datasource import ReadMaxFiles

        return ReadMaxFiles(self.max_files)

    def prepareForTriggerAvailableNow(self) -> None:
        self._target = self._refresh()

    def _refresh(self) -> int:
        self.manifest.add(landed_any(self.root))
        return len(self.manifest.entries)

    def latestOffset(self, start: dict[str, Any], limit: Any) -> dict[str, Any]:
        from pyspark.sql.streaming.datasource import ReadMaxFiles

        end = self._target if self._target is not None else self._refresh()
        if isinstance(limit, ReadMaxFiles):
            end = min(end, int(start["files"]) + limit.max_files)
        return {"files": max(end, int(start["files"]))}

    def reportLatestOffset(self) -> dict[str, Any] | None:
        return {"files": len(self.manifest.entries)}

    def partitions(self, start: dict[str, Any], end: dict[str, Any]) -> list[InputPartition]:
        names = self.manifest.entries[int(start["files"]) : int(end["files"])]
        return [Segments([name]) for name in names]

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        assert isinstance(partition, Segments)
        schema = table_schema(self.table)
        loaded = topic_mapping.load(self.mapping_path)
        for name in partition.names:
            if not self.root.startswith("s3://"):
                path = Path(self.root) / name
                landed_at = datetime.fromtimestamp(path.stat().st_mtime_ns / 1e9, tz=UTC)
                yield from decode_segment(path, name, landed_at, self.table, loaded, schema)
                continue
            bucket, prefix = split_s3(self.root)
            with tempfile.TemporaryDirectory(prefix="nuro-stream-s3-") as tmp:
                # Keep the key's date=/vehicle= folders: they carry the segment's partition keys.
                path = Path(tmp) / name
                path.parent.mkdir(parents=True, exist_ok=True)
                client = _s3_client()
                client.download_file(bucket, prefix + name, str(path))
                head = client.head_object(Bucket=bucket, Key=prefix + name)
                yield from decode_segment(path, name, head["LastModified"], self.table, loaded, schema)


def decode_segment(
    path: Path,
    name: str,
    landed_at: datetime,
    table: str,
    loaded: topic_mapping.LoadedMapping,
    schema: pa.Schema,
) -> Iterator[pa.RecordBatch]:
    """The rows of ``table`` in one landed segment, decoded by the batch ETL's per-file pass."""
    from nuro_ml.etl.layout import PathTemplate
    from nuro_ml.etl.process import FileTask, process_file

    # Segments land in the batch's default (hive) layout, named relative to the landing root.
    keys = PathTemplate.of("hive").match(name)
    if keys is None:
        log.warning("Skipping landed segment %s: not under date=YYYY-MM-DD/vehicle=<id>/<segment>.mcap", name)
        return
    day, vehicle, drive = keys["date"], keys["vehicle"], keys["drive"]
    staging = tempfile.mkdtemp(prefix="nuro-stream-segment-")
    try:
        task = FileTask(
            path=str(path),
            day=day,
            vehicle=vehicle,
            drive=drive,
            staging=staging,
            mapping=loaded,
            transform=TransformConfig(),
            created_us=int(landed_at.timestamp() * 1_000_000),
        )
        result = process_file(task)
        if not result.ok:
            log.warning(
                "Skipping landed segment %s: %s",
                name,
                result.unmapped or f"{result.reason} at byte {result.offset}",
            )
            return
        parquet = Path(staging) / table / f"date={day}" / f"vehicle={vehicle}" / f"part-{drive}.parquet"
        if not parquet.exists():
            return
        rows = pq.read_table(parquet)
        n = rows.num_rows
        keys = {
            "vehicle_id": pa.array([vehicle] * n, pa.string()),
            "drive_id": pa.array([drive] * n, pa.string()),
            "segment": pa.array([name] * n, pa.string()),
            "landed_at": pa.array([landed_at] * n, _TS),
        }
        columns = [keys[f.name] if f.name in keys else rows.column(f.name).cast(f.type) for f in schema]
        out = pa.Table.from_arrays(columns, schema=schema)
        yield from out.to_batches(max_chunksize=65_536)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
