"""One pass over one drive log: check, decode, map to tables and write Parquet, chunk by chunk.

Each chunk is decompressed once; the messages of consecutive chunks (about 8 MiB of them) are
checked together (declared channel, monotonic log times, payloads that decode; an error names the
chunk that holds the bad message) and decoded once per channel with the columns the mapping
needs, then routed to their table. Rows are written from the worker to
``<staging>/<table>/date=D/vehicle=V/part-<drive>.parquet``; the drive's derived tables
(``ego_motion``, ``scene_stats``) are computed from the mapped pose, CAN, IMU, GNSS, lidar and
camera rows at the end. When the file turns out bad, everything it wrote is removed, except for a
file without an index whose damage ends a valid prefix (a truncated tail): its rows are kept and
the report lists them as ``salvaged``.
"""

from __future__ import annotations

import functools
import io
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nuro_ml.etl import mcap_io
from nuro_ml.etl.arrays import one_array
from nuro_ml.etl.batching import ChannelBatcher
from nuro_ml.etl.mapping import LoadedMapping, Route, UnmappedTopicError, field_columns
from nuro_ml.etl.mcap_io import ChannelInfo, McapFormatError, MessageBatch, SchemaInfo
from nuro_ml.etl.reader import UnsupportedSchemaError, decoder_for
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
    ego_motion,
    lidar_stats,
    scene_stats,
)
from nuro_ml.etl.validation import FileReport

_TS = pa.timestamp("us", tz="UTC")
#: Rows are buffered per table up to these limits before a row group is written.
_FLUSH_ROWS = 65_536
_FLUSH_BYTES = 32 << 20
#: Decompressed chunk bytes loaded into one buffer (see ``_process``).
_GROUP_BYTES = 8 << 20
#: Payload tables and the reference tables derived from them (the same rows without ``data``).
PAYLOAD_REFS = {"lidar_payload": "lidar_points", "camera_payload": "camera_frames"}


@dataclass
class FileResult(FileReport):
    """What processing one file found (the checker's report, quarantined the same way) and wrote."""

    #: Rows written per table (kept only when the file is ok or salvaged).
    rows: dict[str, int] = field(default_factory=dict)
    #: Topic -> table (``None``: excluded by the mapping).
    routes: dict[str, str | None] = field(default_factory=dict)
    chunks: int = 0
    chunks_decompressed: int = 0
    #: A topic that ends in no table: the run fails with this message.
    unmapped: str | None = None
    seconds: float = 0.0


class _Bad(Exception):
    def __init__(self, reason: str, offset: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.offset = offset


@dataclass(frozen=True)
class FileTask:
    """One file to process and where its rows go."""

    path: str
    day: str
    vehicle: str
    drive: str
    staging: str
    mapping: LoadedMapping
    transform: TransformConfig
    created_us: int


class _Tables:
    """Buffered Parquet writers, one per table, for one drive."""

    def __init__(self, task: FileTask) -> None:
        self.task = task
        self.buffers: dict[str, list[pa.Table]] = {}
        self.sizes: dict[str, int] = {}
        self.writers: dict[str, pq.ParquetWriter] = {}
        #: The schema of each table's first rows; later rows are cast to it.
        self.schemas: dict[str, pa.Schema] = {}
        self.rows: dict[str, int] = {}
        self.paths: list[Path] = []

    def path(self, table: str) -> Path:
        t = self.task
        return Path(t.staging) / table / f"date={t.day}" / f"vehicle={t.vehicle}" / f"part-{t.drive}.parquet"

    def add(self, table: str, rows: pa.Table) -> None:
        if not rows.num_rows:
            return
        buf = self.buffers.setdefault(table, [])
        buf.append(rows)
        self.sizes[table] = self.sizes.get(table, 0) + rows.nbytes
        self.rows[table] = self.rows.get(table, 0) + rows.num_rows
        if sum(t.num_rows for t in buf) >= _FLUSH_ROWS or self.sizes[table] >= _FLUSH_BYTES:
            self._flush(table)

    def _flush(self, table: str) -> None:
        buf = self.buffers.pop(table, [])
        self.sizes.pop(table, None)
        if not buf:
            return
        writer = self.writers.get(table)
        schema = self.schemas.setdefault(table, buf[0].schema)
        data = pa.concat_tables([t if t.schema == schema else _conform(t, schema, table) for t in buf])
        if writer is None:
            path = self.path(table)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.paths.append(path)
            writer = self.writers[table] = pq.ParquetWriter(path, schema, **_write_options(schema))
        writer.write_table(data)

    def close(self) -> None:
        for table in list(self.buffers):
            self._flush(table)
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()

    def discard(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()
        self.buffers.clear()
        for path in self.paths:
            path.unlink(missing_ok=True)
        self.rows.clear()


@functools.lru_cache(maxsize=256)
def _write_options(schema: pa.Schema) -> dict[str, Any]:
    """Parquet settings: zstd, except for binary columns (payloads) stored as they are.

    Payloads are compressed images or point clouds of float noise: zstd saves about a tenth of
    them at twice the cost of writing them, and dictionaries and min/max statistics of
    kilobyte-long unique values only cost time.
    """
    binary = {f.name for f in schema if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)}
    if not binary:
        return {"compression": "zstd"}
    # Per-column settings name leaf columns by their Parquet path (``fields.list.element.name``).
    sink = io.BytesIO()
    pq.write_table(schema.empty_table(), sink)
    parquet_schema = pq.ParquetFile(io.BytesIO(sink.getvalue())).schema
    paths = [parquet_schema.column(i).path for i in range(len(parquet_schema))]
    rest = [path for path in paths if path not in binary]
    return {
        "compression": {path: "none" if path in binary else "zstd" for path in paths},
        "use_dictionary": rest,
        "write_statistics": rest,
    }


def _conform(rows: pa.Table, schema: pa.Schema, table: str) -> pa.Table:
    """Cast ``rows`` to the table's first schema, or explain which column differs."""
    if rows.schema.names != schema.names:
        raise UnsupportedSchemaError(
            f"table {table}: sources give different columns {rows.schema.names} and {schema.names}"
        )
    return rows.cast(schema)


class _Channel:
    """A channel's route, decoder and the columns to decode."""

    def __init__(self, task: FileTask, channel: ChannelInfo, schema: SchemaInfo | None) -> None:
        self.topic = channel.topic
        self.schema_name = schema.name if schema is not None else ""
        self.decoder: Any = None
        self.columns: list[str] | None = None
        self.route: Route = task.mapping.route(task.vehicle, channel.topic, self.schema_name)
        if schema is None:
            raise _Bad(f"channel {channel.topic} has no schema", 0)
        try:
            self.decoder = decoder_for(schema, channel.message_encoding)
        except UnsupportedSchemaError as err:
            if self.route.table is not None:
                raise UnmappedTopicError(
                    f"topic {channel.topic!r} (schema {self.schema_name!r}) cannot be decoded ({err}); "
                    f"add its name under 'exclude' in mapping {task.mapping.name} to leave it out"
                ) from err
            return
        if self.route.source is not None:
            needed = field_columns(self.route.source)
            available = set(self.decoder.schema.names)
            if needed is not None:
                missing = [c for c in needed if c not in available]
                if missing:
                    raise UnmappedTopicError(
                        f"topic {channel.topic!r} (schema {self.schema_name!r}): table "
                        f"{self.route.table} of mapping {self.route.mapping} reads field(s) "
                        f"{', '.join(m.replace('_', '.') for m in missing)} the schema does not have; "
                        f"its fields are {', '.join(sorted(available))}"
                    )
                self.columns = list(needed)


def process_file(task: FileTask) -> FileResult:
    """Check, decode, map and write one file; see the module docstring."""
    t0 = time.monotonic()
    size = os.path.getsize(task.path)
    result = FileResult(file=task.path, ok=False, bytes=size)
    tables = _Tables(task)
    signals: list[pa.Table] = []
    try:
        if size == 0:
            raise _Bad("empty file", 0)
        with mcap_io.mapped(task.path) as buf:
            _process(task, buf, result, tables, signals)
        result.ok = True
    except UnmappedTopicError as err:
        result.unmapped = str(err)
    except _Bad as bad:
        result.reason, result.offset = bad.reason, bad.offset
    except McapFormatError as err:
        result.reason, result.offset = err.reason, err.offset
    if result.ok or result.salvaged:
        try:
            _derived(task, signals, tables)
            tables.close()
        except BaseException:
            tables.discard()
            raise
        result.rows = dict(tables.rows)
    else:
        tables.discard()
    result.seconds = time.monotonic() - t0
    return result


def _process(task: FileTask, buf: Any, result: FileResult, tables: _Tables, signals: list[pa.Table]) -> None:
    try:
        summary = mcap_io.read_summary(buf)
    except McapFormatError:
        summary = None
    result.indexed = summary is not None and bool(summary.chunks)
    scan = mcap_io.scan(buf)
    if scan.damage is not None and summary is not None:
        raise scan.damage
    if summary is not None:
        offsets = {c.offset for c in scan.chunks}
        missing = [c.offset for c in summary.chunks if c.offset not in offsets]
        if missing:
            raise _Bad("chunk index points at no chunk", missing[0])
    result.chunks = len(scan.chunks)
    state = _State(task, scan.schemas, scan.channels, result, tables, signals)
    batcher = ChannelBatcher()
    if scan.loose_messages:
        loose = np.asarray(scan.loose_messages, dtype=np.int64)
        state.batch(batcher.add(mcap_io.envelopes(buf, loose), loose))
    # Chunks are loaded in groups into one buffer, and each channel's messages are collected across
    # groups: a recorder's chunks are small and hold every channel, so one chunk gives a channel
    # only a few messages, and the per-call cost of decoding, mapping and buffering them would
    # outweigh the work on them.
    for group in mcap_io.chunk_groups(scan.chunks, _GROUP_BYTES):
        batch, where = mcap_io.load_chunks(buf, group, scan.schemas, scan.channels, verify_crc=True)
        result.chunks_decompressed += len(group)
        state.batch(batcher.add(batch, where))
    state.batch(batcher.flush())
    if state.unmapped:
        raise UnmappedTopicError(" | ".join(state.unmapped))
    counts = {state.channels[cid].topic: n for cid, n in sorted(state.counts.items()) if n}
    if scan.damage is not None:
        # No index to read by: everything before the damage checked out and was written.
        result.salvaged = counts
        raise scan.damage
    found = sum(state.counts.values())
    if summary is not None and summary.message_count is not None and summary.message_count != found:
        raise _Bad(
            f"summary counts {summary.message_count} messages, the data section has {found}", len(buf) - 8
        )
    result.messages = counts


class _State:
    def __init__(
        self,
        task: FileTask,
        schemas: dict[int, SchemaInfo],
        channels: dict[int, ChannelInfo],
        result: FileResult,
        tables: _Tables,
        signals: list[pa.Table],
    ) -> None:
        self.task = task
        self.schemas = schemas
        self.channels = channels
        self.result = result
        self.tables = tables
        self.signals = signals
        self.last_time: dict[int, int] = {}
        self.counts: dict[int, int] = {}
        self.handlers: dict[int, _Channel | None] = {}
        self.unmapped: list[str] = []

    def handler(self, cid: int, offset: int) -> _Channel | None:
        if cid in self.handlers:
            return self.handlers[cid]
        h: _Channel | None = None
        channel = self.channels.get(cid)
        if channel is None:
            raise _Bad(f"message on undeclared channel {cid}", offset)
        try:
            h = _Channel(self.task, channel, self.schemas.get(channel.schema_id))
        except _Bad as bad:
            raise _Bad(bad.reason, offset) from bad
        except UnmappedTopicError as err:
            # Every such topic of the file is reported, not only the first.
            self.unmapped.append(str(err))
            h = None
        self.handlers[cid] = h
        if h is not None:
            self.result.routes[h.topic] = h.route.table
            self.result.schemas[h.topic] = h.schema_name
        return h

    def batch(self, parts: Iterable[tuple[int, MessageBatch, np.ndarray]]) -> None:
        """Check, decode and route each channel's messages: ``(channel id, messages, where)``,
        ``where[i]``: file offset of the record holding message ``i``."""
        for cid, sub, at in parts:
            h = self.handler(cid, int(at[0]))
            times = sub.log_time
            prev = self.last_time.get(cid)
            back = np.flatnonzero(np.diff(times) < 0)
            if (prev is not None and times[0] < prev) or back.shape[0]:
                offset = int(at[0] if prev is not None and times[0] < prev else at[back[0] + 1])
                raise _Bad(f"non-monotonic log times on topic {self.channels[cid].topic}", offset)
            self.last_time[cid] = int(times[-1])
            self.counts[cid] = self.counts.get(cid, 0) + len(sub)
            if h is None or h.decoder is None:
                continue  # excluded and not decodable: counted only
            columns = h.columns if h.route.table else []
            try:
                decoded = h.decoder.decode(sub.buf, sub.starts, sub.ends, columns)
            except Exception as err:
                offset = _failing_record(h, sub, at, columns)
                raise _Bad(f"payload on topic {h.topic} does not decode: {err}", offset) from err
            if h.route.table is None:
                continue
            rows = _rows(h, sub, decoded)
            table = h.route.table
            rows = _FINISH.get(table, _same)(rows)
            self.tables.add(table, rows)
            if table in PAYLOAD_REFS:
                self.tables.add(PAYLOAD_REFS[table], rows.drop_columns(["data"]))
            sig = _signal(table, rows)
            if sig is not None:
                self.signals.append(sig)


def _failing_record(h: _Channel, sub: MessageBatch, at: np.ndarray, columns: list[str] | None) -> int:
    """The offset of the first chunk (or record) whose messages do not decode on their own."""
    for offset in dict.fromkeys(at.tolist()):
        part = sub.select(at == offset)
        try:
            h.decoder.decode(part.buf, part.starts, part.ends, columns)
        except Exception:
            return int(offset)
    return int(at[0])


def _rows(h: _Channel, sub: MessageBatch, decoded: pa.Table) -> pa.Table:
    """Envelope columns plus the mapped columns of one channel's messages."""
    n = len(sub)
    log_ns = pa.array(sub.log_time, pa.int64())
    source = h.route.source
    if source is None or source.time == "log_time":
        stamp_ns = log_ns
    else:
        stamp = decoded.column(source.time.replace(".", "_"))
        stamp_ns = one_array(pc.multiply(stamp.cast(pa.int64()), 1000))
    cols: dict[str, Any] = {
        "topic": pa.array([h.topic] * n, pa.string()),
        "log_time": pa.array(sub.log_time // 1000, _TS),
        "log_time_ns": log_ns,
        "stamp_ns": stamp_ns,
    }
    specs = source.column_specs() if source is not None else None
    if specs is None:
        for name in decoded.column_names:
            cols[name] = decoded.column(name)
    else:
        for name, spec in specs.items():
            col = decoded.column(spec.column)
            if spec.scale is not None or spec.offset is not None:
                col = pc.add(pc.multiply(col.cast(pa.float64()), spec.scale or 1.0), spec.offset or 0.0)
            cols[name] = col
    return pa.table(cols)


def _same(rows: pa.Table) -> pa.Table:
    return rows


def _set(rows: pa.Table, name: str, values: Any) -> pa.Table:
    if name in rows.column_names:
        return rows.set_column(rows.column_names.index(name), name, values)
    return rows.append_column(name, values)


def _finish_pose(rows: pa.Table) -> pa.Table:
    qx, qy, qz, qw = (rows.column(c).to_numpy().astype(np.float64) for c in ("qx", "qy", "qz", "qw"))
    yaw = np.arctan2(2 * (qw * qz + qx * qy), 1 - 2 * (qy * qy + qz * qz))
    return _set(rows, "yaw_rad", pa.array(yaw))


def _finish_gnss(rows: pa.Table) -> pa.Table:
    cov = one_array(rows.column("position_covariance"))
    first = pc.list_element(cov, 0).to_numpy(zero_copy_only=False).astype(np.float64)
    fifth = pc.list_element(cov, 4).to_numpy(zero_copy_only=False).astype(np.float64)
    rows = _set(rows, "covariance_type", rows.column("covariance_type").cast(pa.int32()))
    rows = _set(rows, "h_std_m", pa.array(np.sqrt((first + fifth) / 2)))
    if "fix_status" in rows.column_names:
        # NavSatStatus: STATUS_NO_FIX = -1 and below; a fix is 0 (FIX) or above.
        valid = pc.greater_equal(rows.column("fix_status"), 0)
        rows = rows.drop_columns(["fix_status"])
    else:
        valid = pc.not_equal(rows.column("covariance_type"), 0)
    return _set(rows, "fix_valid", valid)


def _finish_can(rows: pa.Table) -> pa.Table:
    return _set(rows, "gear", rows.column("gear").cast(pa.int32()))


def _finish_lidar(rows: pa.Table) -> pa.Table:
    rows = _set(rows, "point_stride", rows.column("point_stride").cast(pa.int64()))
    data = one_array(rows.column("data"))
    stats = lidar_stats(data, one_array(rows.column("point_stride")), one_array(rows.column("fields")))
    rows = rows.drop_columns(["data"])
    for name, _ in LIDAR_STATS_FIELDS:
        rows = _set(rows, name, stats[name])
    return rows.append_column("data", data)


def _finish_camera(rows: pa.Table) -> pa.Table:
    data = rows.column("data")
    rows = rows.drop_columns(["data"])
    rows = _set(rows, "payload_bytes", pc.binary_length(data).cast(pa.int64()))
    return rows.append_column("data", data)


_FINISH: dict[str, Callable[[pa.Table], pa.Table]] = {
    "ego_pose": _finish_pose,
    "gnss_fix": _finish_gnss,
    "vehicle_can": _finish_can,
    "lidar_payload": _finish_lidar,
    "camera_payload": _finish_camera,
}

#: Table -> (signal code, columns a, b, c) the derived tables read.
_SIGNALS: dict[str, tuple[int, tuple[str | None, ...]]] = {
    "ego_pose": (SRC_POSE, ("x_m", "y_m", "yaw_rad")),
    "vehicle_can": (SRC_CAN, ("speed_mps", "brake_pressure_bar", "steering_angle_rad")),
    "imu": (SRC_IMU, ("angular_velocity_z", "linear_acceleration_x", "linear_acceleration_y")),
    "gnss_fix": (SRC_GNSS, ("fix_valid", "h_std_m", None)),
    "lidar_payload": (SRC_LIDAR, ("point_count", None, None)),
    "camera_payload": (SRC_CAMERA, (None, None, None)),
}


def _signal(table: str, rows: pa.Table) -> pa.Table | None:
    spec = _SIGNALS.get(table)
    if spec is None:
        return None
    code, names = spec
    n = rows.num_rows
    cols: dict[str, Any] = {
        "src": pa.array(np.full(n, code, dtype=np.int64)),
        "t_ns": rows.column("stamp_ns"),
    }
    for key, name in zip("abc", names, strict=True):
        if name is None:
            cols[key] = pa.array(np.full(n, 1.0 if code == SRC_CAMERA and key == "a" else 0.0))
        else:
            cols[key] = rows.column(name).cast(pa.float64())
    return pa.table(cols)


def _derived(task: FileTask, signals: list[pa.Table], tables: _Tables) -> None:
    if not signals:
        return
    table = pa.concat_tables(signals)
    cfg = task.transform
    ego = ego_motion(table, task.vehicle, task.drive, cfg).cast(EGO_MOTION_SCHEMA)
    tables.add("ego_motion", ego)
    scenes = scene_stats(table, task.vehicle, task.drive, task.created_us, cfg).cast(SCENE_STATS_SCHEMA)
    tables.add("scene_stats", scenes)
