"""The live view's offline table: ``<output>/live_state``, what the stream pushed online, durably.

The stream pushes the newest row per vehicle online; point-in-time joins and ``feast
materialize`` need the history behind it. That history is the ``vehicle_can`` table (batch
partitions, then the stream's segment rows after the batch's last date, by
:func:`nuro_ml.etl.combined.read_table`) plus the live records the stream landed in
``stream/telemetry`` (which have no batch counterpart), in the push source's columns.

The table is hive-partitioned by ``date=`` like the batch tables, so the materializer's
partitioned path and its computation cache apply. :func:`refresh_live_state` rewrites only the
dates whose rows changed (each file replaced atomically), so unchanged days keep their files
and their cache entries, and a reader never sees a half-written day.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nuro_ml.etl.combined import batch_dates, read_table
from nuro_ml.etl.stream_tables import LIVE_STATE_INPUTS, LIVE_STATE_TABLE, ONLINE_COLUMNS

log = logging.getLogger(__name__)

_FEATURES = [c for c in ONLINE_COLUMNS if c not in ("vehicle_id", "event_timestamp")]
_TS = pa.timestamp("us", tz="UTC")
_PART_FILE = "part-0.parquet"


@dataclass
class LiveStateReport:
    """What one refresh did."""

    rows: int = 0
    #: Rows per input table (after the batch/stream rule).
    inputs: dict[str, int] = field(default_factory=dict)
    #: Last date the batch ``vehicle_can`` covers (stream rows count only after it).
    batch_through: str | None = None
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def to_xcom(self) -> dict[str, object]:
        return {
            "rows": self.rows,
            "inputs": dict(self.inputs),
            "batch_through": self.batch_through,
            "written": list(self.written),
            "unchanged": len(self.unchanged),
            "removed": list(self.removed),
        }


def live_state_rows(output_path: str | Path) -> tuple[pa.Table, dict[str, int]]:
    """The live view's rows (push source columns plus ``date``), sorted by vehicle and time."""
    parts: list[pa.Table] = []
    counts: dict[str, int] = {}
    for table, time_column in LIVE_STATE_INPUTS.items():
        try:
            rows = read_table(output_path, table, columns=[time_column, *_FEATURES], time_column=time_column)
        except FileNotFoundError:
            counts[table] = 0
            continue
        counts[table] = rows.num_rows
        parts.append(
            pa.table(
                {
                    "vehicle_id": rows.column("vehicle").cast(pa.string()),
                    "event_timestamp": rows.column(time_column).cast(_TS),
                    **{c: rows.column(c).cast(pa.float64()) for c in _FEATURES},
                    "date": rows.column("date").cast(pa.string()),
                }
            )
        )
    if not parts:
        schema = pa.schema(
            [("vehicle_id", pa.string()), ("event_timestamp", _TS)]
            + [(c, pa.float64()) for c in _FEATURES]
            + [("date", pa.string())]
        )
        return schema.empty_table(), counts
    combined = pa.concat_tables(parts)
    return combined.sort_by([("vehicle_id", "ascending"), ("event_timestamp", "ascending")]), counts


def _write_atomic(table: pa.Table, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def refresh_live_state(output_path: str | Path) -> LiveStateReport:
    """Rebuild ``<output_path>/live_state`` from the batch and stream tables (see the module doc)."""
    root = Path(output_path)
    target = root / LIVE_STATE_TABLE
    rows, counts = live_state_rows(root)
    through = batch_dates(root / "vehicle_can")
    report = LiveStateReport(
        rows=rows.num_rows, inputs=counts, batch_through=through[-1].isoformat() if through else None
    )
    days = sorted(pc.unique(rows.column("date")).to_pylist())
    for day in days:
        date.fromisoformat(day)  # a malformed time would name a bogus partition: fail here
        part = rows.filter(pc.equal(rows.column("date"), day)).drop_columns(["date"])
        path = target / f"date={day}" / _PART_FILE
        if path.is_file() and pq.ParquetFile(path).read().equals(part):
            report.unchanged.append(day)
            continue
        _write_atomic(part, path)
        report.written.append(day)
    if target.is_dir():
        keep = {f"date={d}" for d in days}
        for entry in sorted(target.iterdir()):
            if entry.is_dir() and entry.name.startswith("date=") and entry.name not in keep:
                shutil.rmtree(entry)
                report.removed.append(entry.name.removeprefix("date="))
    log.info(
        "Live state under %s: %d rows (%s), batch through %s; %d days written, %d unchanged, %d removed",
        target,
        report.rows,
        ", ".join(f"{t} {n}" for t, n in counts.items()),
        report.batch_through or "-",
        len(report.written),
        len(report.unchanged),
        len(report.removed),
    )
    return report
