"""The live view's offline table: ``<output>/live_state``, what the stream pushed online, durably.

The stream pushes the newest row per vehicle online; point-in-time joins and ``feast
materialize`` need the history behind it. That history is the ``vehicle_can`` table (batch
partitions, then the stream's segment rows after the batch's last date, by the rule of
:mod:`nuro_ml.etl.combined`) plus the live records the stream landed in ``stream/telemetry``
(which have no batch counterpart), in the push source's columns.

The table is hive-partitioned by ``date=`` like the batch tables, so the materializer's
partitioned path and its computation cache apply. :func:`refresh_live_state` plans each day's
input files without reading rows, and reads and rewrites only the days whose inputs changed
since the last refresh (``_inputs.json`` keeps their fingerprints); each day's file is replaced
atomically, so a reader never sees a half-written day, and unchanged days keep their files and
their cache entries.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from nuro_ml.etl.combined import DayInputs, batch_dates, plan_days, read_day
from nuro_ml.etl.stream_progress import write_json_atomic
from nuro_ml.etl.stream_tables import LIVE_STATE_INPUTS, LIVE_STATE_TABLE, ONLINE_COLUMNS

log = logging.getLogger(__name__)

_FEATURES = [c for c in ONLINE_COLUMNS if c not in ("vehicle_id", "event_timestamp")]
_TS = pa.timestamp("us", tz="UTC")
_PART_FILE = "part-0.parquet"
#: Fingerprints of the inputs each day was built from (underscore: not data for any reader).
_MANIFEST = "_inputs.json"
SCHEMA = pa.schema(
    [("vehicle_id", pa.string()), ("event_timestamp", _TS)] + [(c, pa.float64()) for c in _FEATURES]
)


@dataclass
class LiveStateReport:
    """What one refresh did."""

    #: Rows of the days rebuilt (unchanged days are not read).
    rows: int = 0
    #: Per input table, rows read for the rebuilt days (after the batch/stream rule).
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


def _day_rows(day: date, inputs: dict[str, DayInputs], counts: dict[str, int]) -> pa.Table:
    """One day of the live view, sorted by vehicle and time."""
    parts = []
    for table, time_column in LIVE_STATE_INPUTS.items():
        if table not in inputs:
            continue
        rows = read_day(inputs[table], columns=[time_column, *_FEATURES], time_column=time_column)
        counts[table] += rows.num_rows
        parts.append(
            pa.table(
                {
                    "vehicle_id": rows.column("vehicle").cast(pa.string()),
                    "event_timestamp": rows.column(time_column).cast(_TS),
                    **{c: rows.column(c).cast(pa.float64()) for c in _FEATURES},
                },
                schema=SCHEMA,
            )
        )
    combined = pa.concat_tables(parts) if parts else SCHEMA.empty_table()
    return combined.sort_by([("vehicle_id", "ascending"), ("event_timestamp", "ascending")])


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


def _read_manifest(path: Path) -> dict[str, str]:
    try:
        raw = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}  # rebuilt from scratch: every day is compared with what is there
    return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}


def refresh_live_state(output_path: str | Path) -> LiveStateReport:
    """Bring ``<output_path>/live_state`` up to date with the batch and stream tables."""
    root = Path(output_path)
    target = root / LIVE_STATE_TABLE
    plans = {table: plan_days(root, table, time_column=ts) for table, ts in LIVE_STATE_INPUTS.items()}
    through = batch_dates(root / "vehicle_can")
    report = LiveStateReport(
        inputs=dict.fromkeys(LIVE_STATE_INPUTS, 0), batch_through=through[-1].isoformat() if through else None
    )
    manifest_path = target / _MANIFEST
    built = _read_manifest(manifest_path)
    fingerprints: dict[str, str] = {}
    days = sorted(set().union(*(plan.keys() for plan in plans.values())))
    for day in days:
        inputs = {table: plan[day] for table, plan in plans.items() if day in plan}
        key = day.isoformat()
        fingerprint = "+".join(inputs[t].fingerprint() for t in sorted(inputs))
        path = target / f"date={key}" / _PART_FILE
        if built.get(key) == fingerprint and path.is_file():
            fingerprints[key] = fingerprint
            report.unchanged.append(key)
            continue
        rows = _day_rows(day, inputs, report.inputs)
        report.rows += rows.num_rows
        if rows.num_rows == 0:
            continue  # e.g. stream files whose rows of this day were all superseded
        fingerprints[key] = fingerprint
        if path.is_file() and pq.ParquetFile(path).read().equals(rows):
            report.unchanged.append(key)
            continue
        _write_atomic(rows, path)
        report.written.append(key)
    if target.is_dir():
        for entry in sorted(target.iterdir()):
            if entry.is_dir() and entry.name.startswith("date=") and entry.name[5:] not in fingerprints:
                shutil.rmtree(entry)
                report.removed.append(entry.name.removeprefix("date="))
    if fingerprints or manifest_path.exists():
        write_json_atomic(manifest_path, fingerprints)
    log.info(
        "Live state under %s: batch through %s; %d days written, %d unchanged, %d removed; rows read %s",
        target,
        report.batch_through or "-",
        len(report.written),
        len(report.unchanged),
        len(report.removed),
        ", ".join(f"{t} {n}" for t, n in report.inputs.items()),
    )
    return report
