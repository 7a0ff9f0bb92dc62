"""The telemetry stream's progress record: what the supervising trigger and sensor read.

The stream job keeps one small JSON file, ``<state_dir>/progress.json``, replaced atomically on
every change: the driver's process id, and per streaming query its id, last committed batch and
when, input and processing rates, batch duration and event-time watermark; plus the freshness
of the online features (landing or arrival to readable online). Readers never see a half-written
record. The start operator keeps the launch facts in ``<state_dir>/launch.json``.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PROGRESS_FILE = "progress.json"
LAUNCH_FILE = "launch.json"


def now_iso() -> str:
    return datetime.now(tz=UTC).isoformat()


def parse_time(value: str | None) -> datetime | None:
    """An ISO 8601 time (Spark writes ``2026-12-05T16:30:00.000Z``) as an aware UTC datetime."""
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@dataclass
class QueryProgress:
    """One streaming query's latest committed micro-batch."""

    id: str
    run_id: str
    batch_id: int = -1
    #: When the batch committed (the progress event's time).
    committed_at: str | None = None
    #: Last sign of life: a committed batch or Spark's idle event (no new data).
    heartbeat_at: str | None = None
    num_input_rows: int = 0
    input_rows_per_second: float = 0.0
    processed_rows_per_second: float = 0.0
    batch_duration_ms: int = 0
    #: Event-time watermark after the batch; ``None`` for a query without one.
    watermark: str | None = None
    #: Set when the query stopped; ``""`` for a clean stop, the error otherwise.
    terminated: str | None = None


@dataclass
class StreamProgress:
    """The whole record (see the module docstring)."""

    pid: int
    started_at: str
    checkpoint: str
    output: str
    #: Spark application id of the driver.
    app_id: str | None = None
    queries: dict[str, QueryProgress] = field(default_factory=dict)
    #: Seconds from arrival to online: last batch's p95 and max, window p95, samples in window.
    freshness: dict[str, float] = field(default_factory=dict)
    updated_at: str = field(default_factory=now_iso)

    @classmethod
    def read(cls, state_dir: str | Path) -> StreamProgress | None:
        path = Path(state_dir) / PROGRESS_FILE
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except json.JSONDecodeError as err:
            raise ValueError(f"progress record {path} is not JSON: {err}") from err
        queries = {name: QueryProgress(**q) for name, q in raw.pop("queries", {}).items()}
        return cls(queries=queries, **raw)

    def write(self, state_dir: str | Path) -> None:
        self.updated_at = now_iso()
        write_json_atomic(Path(state_dir) / PROGRESS_FILE, asdict(self))

    def last_heartbeat(self) -> datetime | None:
        """The oldest last sign of life over all queries (a query that never reported: ``None``)."""
        times = [parse_time(q.heartbeat_at) for q in self.queries.values()]
        if not times or any(t is None for t in times):
            return None
        return min(t for t in times if t is not None)

    def watermark(self, queries: list[str] | None = None) -> datetime | None:
        """The committed event-time watermark of the stream: the lowest over ``queries``.

        ``None`` while any of them has no watermark yet (nothing committed through any time).
        By default every query that has a watermark.
        """
        names = queries if queries is not None else [n for n, q in self.queries.items() if q.watermark]
        if not names:
            return None
        marks = []
        for name in names:
            q = self.queries.get(name)
            mark = parse_time(q.watermark) if q is not None else None
            if mark is None or mark.timestamp() <= 0:
                return None
            marks.append(mark)
        return min(marks)


def pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"
