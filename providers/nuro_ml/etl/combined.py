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
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from nuro_ml.etl.sink_log import committed_files
from nuro_ml.etl.stream_tables import STREAM_DIR

#: Partition columns the batch layout adds (``date=YYYY-MM-DD/vehicle=<id>``).
PARTITION_COLUMNS = ("date", "vehicle")


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


def _batch_rows(table_dir: Path) -> pa.Table | None:
    if not batch_dates(table_dir):
        return None
    partitioning = ds.partitioning(
        pa.schema([pa.field("date", pa.string()), pa.field("vehicle", pa.string())]), flavor="hive"
    )
    return ds.dataset(
        table_dir, format="parquet", partitioning=partitioning, exclude_invalid_files=True
    ).to_table()


def _stream_rows(stream_dir: Path) -> pa.Table | None:
    files = committed_files(stream_dir)
    if not files:
        return None
    return ds.dataset(sorted(str(f) for f in files), format="parquet").to_table()


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
    batch = _batch_rows(root / table)
    stream = _stream_rows(root / STREAM_DIR / table)
    last = batch_dates(root / table)[-1] if batch is not None else None
    parts: list[pa.Table] = []
    if batch is not None:
        parts.append(batch)
    if stream is not None:
        if time_column not in stream.column_names:
            raise KeyError(
                f"table {table}: stream rows under {root / STREAM_DIR / table} have no time column "
                f"{time_column!r} (columns: {stream.column_names})"
            )
        day = pc.strftime(stream.column(time_column), format="%Y-%m-%d")
        stream = stream.append_column("date", day).append_column("vehicle", stream.column("vehicle_id"))
        if last is not None:
            stream = stream.filter(pc.greater(stream.column("date"), last.isoformat()))
        parts.append(stream)
    if not parts:
        raise FileNotFoundError(
            f"table {table} has neither batch partitions under {root / table} nor committed stream "
            f"rows under {root / STREAM_DIR / table}"
        )
    if columns is None:
        shared = set(parts[0].column_names).intersection(*(p.column_names for p in parts[1:]))
        columns = [c for c in parts[0].column_names if c in shared and c not in PARTITION_COLUMNS]
    keep = [*columns, *PARTITION_COLUMNS]
    for part in parts:
        missing = [c for c in keep if c not in part.column_names]
        if missing:
            raise KeyError(f"table {table}: column(s) {missing} are not in {part.column_names}")
    selected = [p.select(keep) for p in parts]
    return pa.concat_tables(selected, promote_options="permissive")
