"""Batch history plus stream tail: the one rule for reading a table from both.

The batch ETL is the authoritative history: it replaces whole ``date=/vehicle=`` partitions of
``<output>/<table>``. The stream appends ``<output>/stream/<table>`` as data arrives. A reader that
wants both (features, training data) takes

* every batch partition, and
* the stream's rows dated after the batch's last date (the batch's last interval), per
  ``date``/``vehicle`` as the batch would have partitioned them.

A vehicle missing from a date the batch covered had no logs that day: the stream does not fill
it in. Stream rows of a date the batch has reached are superseded by the batch, duplicates
included, so reprocessing a day never counts its rows twice.

:func:`plan_days` applies the rule per date without reading rows (directory listings, the file
sink's metadata log and Parquet footers), so a reader can tell which days' inputs changed and
read only those with :func:`read_day`; :func:`read_table` reads every day.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from nuro_ml.etl.sink_log import committed_files
from nuro_ml.etl.stream_tables import STREAM_DIR

#: Partition columns the batch layout adds (``date=YYYY-MM-DD/vehicle=<id>``).
PARTITION_COLUMNS = ("date", "vehicle")
_PARTITIONING = ds.partitioning(
    pa.schema([pa.field("date", pa.string()), pa.field("vehicle", pa.string())]), flavor="hive"
)


def batch_dates(table_dir: Path) -> list[date]:
    """Dates the batch has partitions for."""
    if not table_dir.is_dir():
        return []
    found = []
    for entry in table_dir.iterdir():
        if entry.is_dir() and entry.name.startswith("date="):
            try:
                found.append(date.fromisoformat(entry.name.removeprefix("date=")))
            except ValueError:
                continue
    return sorted(found)


@dataclass(frozen=True)
class DayInputs:
    """The files one date of a table is read from under the rule."""

    table: str
    day: date
    #: The batch partition's files (``date=<day>/vehicle=*/...``), when the batch covers the day.
    batch: tuple[Path, ...]
    #: Committed stream files holding rows of the day, when the day is after the batch's last.
    stream: tuple[Path, ...]
    #: Root of the batch table (the hive partitioning is read relative to it).
    batch_root: Path

    def fingerprint(self) -> str:
        """Identity of the inputs: paths, sizes and modification times (no rows read)."""
        entries = []
        for path in (*self.batch, *self.stream):
            st = path.stat()
            entries.append((str(path), st.st_size, st.st_mtime_ns))
        blob = json.dumps([self.table, self.day.isoformat(), entries], separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


def _batch_files(day_dir: Path) -> list[Path]:
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(day_dir):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "_")))
        files.extend(
            Path(dirpath) / name
            for name in sorted(filenames)
            if name.endswith(".parquet") and not name.startswith((".", "_"))
        )
    return files


def _file_days(path: Path, time_column: str) -> list[date]:
    """Dates (UTC) of the rows of a stream file, from its footer statistics when it has them."""
    meta = pq.ParquetFile(path).metadata
    schema = meta.schema.to_arrow_schema()
    if time_column not in schema.names:
        raise KeyError(f"stream rows in {path} have no time column {time_column!r} (columns: {schema.names})")
    index = schema.get_field_index(time_column)
    lows: list[datetime] = []
    highs: list[datetime] = []
    for rg in range(meta.num_row_groups):
        group = meta.row_group(rg)
        if group.num_rows == 0:
            continue
        stats = group.column(index).statistics
        if stats is None or not stats.has_min_max or not isinstance(stats.min, datetime):
            column = pq.read_table(path, columns=[time_column]).column(time_column)
            days = pc.unique(pc.strftime(column, format="%Y-%m-%d")).to_pylist()
            return sorted(date.fromisoformat(d) for d in days if d is not None)
        lows.append(stats.min)
        highs.append(stats.max)
    if not lows:
        return []
    first, last = (_utc_day(min(lows)), _utc_day(max(highs)))
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def _utc_day(value: datetime) -> date:
    return (value.astimezone(UTC) if value.tzinfo else value).date()


def plan_days(output_path: str | Path, table: str, *, time_column: str = "log_time") -> dict[date, DayInputs]:
    """Per date, the files the rule reads ``table`` from (batch partition, or stream tail files).

    :param output_path: the ETL output root (batch tables and ``stream/``).
    :param table: a table the stream writes, which the batch may write too (e.g. ``vehicle_can``).
    :param time_column: the stream rows' event time, which dates them as the batch would.
    """
    root = Path(output_path)
    batch_root = root / table
    plan: dict[date, tuple[list[Path], list[Path]]] = {}
    covered = batch_dates(batch_root)
    for day in covered:
        files = _batch_files(batch_root / f"date={day.isoformat()}")
        if files:
            plan[day] = (files, [])
    last = covered[-1] if covered else None
    for path in sorted(committed_files(root / STREAM_DIR / table) or ()):
        for day in _file_days(path, time_column):
            if last is None or day > last:
                plan.setdefault(day, ([], []))[1].append(path)
    return {
        day: DayInputs(table, day, tuple(batch), tuple(stream), batch_root)
        for day, (batch, stream) in sorted(plan.items())
    }


def read_day(
    inputs: DayInputs, *, columns: list[str] | None = None, time_column: str = "log_time"
) -> pa.Table:
    """One date's rows by the rule, with ``date`` and ``vehicle`` columns (see :func:`read_table`)."""
    parts: list[pa.Table] = []
    if inputs.batch:
        parts.append(
            ds.dataset(
                [str(p) for p in inputs.batch],
                format="parquet",
                partitioning=_PARTITIONING,
                partition_base_dir=str(inputs.batch_root),
            ).to_table()
        )
    if inputs.stream:
        stream = ds.dataset([str(p) for p in inputs.stream], format="parquet").to_table()
        day = pc.strftime(stream.column(time_column), format="%Y-%m-%d")
        stream = stream.append_column("date", day).append_column("vehicle", stream.column("vehicle_id"))
        parts.append(stream.filter(pc.equal(stream.column("date"), inputs.day.isoformat())))
    return _select(parts, inputs.table, columns)


def _select(parts: list[pa.Table], table: str, columns: list[str] | None) -> pa.Table:
    if columns is None:
        shared = set(parts[0].column_names).intersection(*(p.column_names for p in parts[1:]))
        columns = [c for c in parts[0].column_names if c in shared and c not in PARTITION_COLUMNS]
    keep = [*columns, *PARTITION_COLUMNS]
    for part in parts:
        missing = [c for c in keep if c not in part.column_names]
        if missing:
            raise KeyError(f"table {table}: column(s) {missing} are not in {part.column_names}")
    return pa.concat_tables([p.select(keep) for p in parts], promote_options="permissive")


def read_table(
    output_path: str | Path,
    table: str,
    *,
    columns: list[str] | None = None,
    time_column: str = "log_time",
) -> pa.Table:
    """``table`` from batch and stream by the rule above, with ``date`` and ``vehicle`` columns.

    :param output_path: the ETL output root (batch tables and ``stream/``).
    :param table: a table the stream writes, which the batch may write too (e.g. ``vehicle_can``).
    :param columns: columns to keep besides ``date`` and ``vehicle``; default those both share.
    :param time_column: the stream rows' event time, which dates them as the batch would.
    """
    root = Path(output_path)
    plan = plan_days(root, table, time_column=time_column)
    if not plan:
        raise FileNotFoundError(
            f"table {table} has neither batch partitions under {root / table} nor committed stream "
            f"rows under {root / STREAM_DIR / table}"
        )
    days = [read_day(inputs, columns=columns, time_column=time_column) for inputs in plan.values()]
    if columns is None:
        # Days read alone may share more columns than the whole table does.
        return _select(days, table, None)
    return pa.concat_tables(days, promote_options="permissive")
