"""The telemetry stream page's data: freshness, rates, last committed batch and watermark.

Read from the stream's progress record (:mod:`nuro_ml.etl.stream_progress`), the same record
the supervising trigger, the watermark sensor and the metrics endpoint read; the page adds the
ages an on-call person compares against the stall limit.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field

from nuro_ml import settings
from nuro_ml.etl.stream_progress import StreamProgress, parse_time, pid_alive


class Freshness(BaseModel):
    """Seconds from a segment landing or a record being added to its feature being online."""

    p95_seconds: float | None = Field(description="95th percentile over the recent window.")
    segment_p95_seconds: float | None = Field(description="p95 of rows from landed segments.")
    record_p95_seconds: float | None = Field(description="p95 of live records.")
    last_batch_p95_seconds: float | None = Field(description="p95 of the last pushed batch.")
    last_batch_max_seconds: float | None = Field(description="Slowest row of the last pushed batch.")
    samples: int = Field(description="Rows in the window the percentiles are taken over.")


class QueryRow(BaseModel):
    """One streaming query's last committed micro-batch."""

    name: str
    id: str
    batch_id: int = Field(description="Last committed batch (-1: none yet).")
    committed_at: datetime | None
    commit_age_seconds: float | None = Field(description="Seconds since that commit.")
    heartbeat_age_seconds: float | None = Field(description="Seconds since a commit or an idle report.")
    input_rows_per_second: float
    processed_rows_per_second: float
    batch_duration_ms: int
    num_input_rows: int
    watermark: datetime | None = Field(description="Event-time watermark after the batch.")
    state: str = Field(description="running, stopped, or failed: <error>.")


class StreamOverview(BaseModel):
    """Everything the stream page shows."""

    generated_at: datetime
    state_dir: str
    running: bool
    pid: int
    app_id: str | None
    started_at: datetime | None
    updated_at: datetime | None
    freshness: Freshness
    #: Lowest committed watermark over the queries that have one (what batch runs gate on).
    watermark: datetime | None
    #: Newest committed batch over all queries.
    last_committed_at: datetime | None
    queries: list[QueryRow]


def state_dir() -> Path:
    """Where the platform's stream keeps its progress record (the ``telemetry_stream`` DAG's)."""
    return settings.stream_dir() / "state"


def _age(then: datetime | None, now: datetime) -> float | None:
    return max((now - then).total_seconds(), 0.0) if then is not None else None


def _state(terminated: str | None, running: bool) -> str:
    if terminated:
        return f"failed: {terminated.splitlines()[0]}"
    if terminated == "" or not running:
        return "stopped"
    return "running"


def stream_overview(progress: StreamProgress, *, where: Path, now: datetime | None = None) -> StreamOverview:
    """The page's figures from one progress record (``where``: its state folder)."""
    now = now or datetime.now(tz=UTC)
    running = pid_alive(progress.pid)
    fresh = progress.freshness
    queries = []
    for name, q in sorted(progress.queries.items()):
        committed = parse_time(q.committed_at)
        mark = parse_time(q.watermark)
        queries.append(
            QueryRow(
                name=name,
                id=q.id,
                batch_id=q.batch_id,
                committed_at=committed,
                commit_age_seconds=_age(committed, now),
                heartbeat_age_seconds=_age(parse_time(q.heartbeat_at), now),
                input_rows_per_second=q.input_rows_per_second,
                processed_rows_per_second=q.processed_rows_per_second,
                batch_duration_ms=q.batch_duration_ms,
                num_input_rows=q.num_input_rows,
                # Spark reports the epoch until a query has seen event time: no watermark yet.
                watermark=mark if mark is not None and mark.timestamp() > 0 else None,
                state=_state(q.terminated, running),
            )
        )
    commits = [row.committed_at for row in queries if row.committed_at is not None]
    return StreamOverview(
        generated_at=now,
        state_dir=str(where),
        running=running,
        pid=progress.pid,
        app_id=progress.app_id,
        started_at=parse_time(progress.started_at),
        updated_at=parse_time(progress.updated_at),
        freshness=Freshness(
            p95_seconds=fresh.get("p95_seconds"),
            segment_p95_seconds=fresh.get("segment_p95_seconds"),
            record_p95_seconds=fresh.get("record_p95_seconds"),
            last_batch_p95_seconds=fresh.get("batch_p95_seconds"),
            last_batch_max_seconds=fresh.get("batch_max_seconds"),
            samples=int(fresh.get("samples", 0)),
        ),
        watermark=progress.watermark(),
        last_committed_at=max(commits) if commits else None,
        queries=queries,
    )
