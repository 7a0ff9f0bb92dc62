"""Triggers that watch the telemetry stream through its progress record, without blocking."""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from nuro_ml.etl.stream_progress import StreamProgress, parse_time, pid_alive


def _now() -> datetime:
    return datetime.now(tz=UTC)


def health(progress: StreamProgress | None, stall_after: float, now: datetime) -> tuple[str, str] | None:
    """``(status, message)`` when the stream is dead or stalled, ``None`` while it is healthy.

    Dead: the driver's process is gone, or a query stopped. Stalled: some query has not
    committed a batch nor reported itself idle (caught up) for ``stall_after`` seconds.
    """
    if progress is None:
        return "dead", "the stream has no progress record (it never started)"
    if not pid_alive(progress.pid):
        return "dead", f"stream driver {progress.pid} is not running"
    stopped = {n: q.terminated for n, q in progress.queries.items() if q.terminated is not None}
    if stopped:
        detail = "; ".join(f"{n}: {err or 'stopped'}" for n, err in sorted(stopped.items()))
        return "dead", f"stream queries stopped ({detail})"
    beat = progress.last_heartbeat() or parse_time(progress.started_at)
    if beat is not None and (now - beat).total_seconds() > stall_after:
        return "stalled", (
            f"the stream has not committed a batch or reported idle for {(now - beat).total_seconds():.0f} s "
            f"(limit {stall_after:.0f} s); last sign of life {beat.isoformat()}"
        )
    return None


class StreamHealthTrigger(BaseTrigger):
    """
    Fire when the telemetry stream stalls or dies, judged from its progress record.

    The event is ``{"status": "dead" | "stalled" | "error", "message": ..., "pid": ...,
    "state_dir": ...}`` (``"stack_trace"`` on errors). A healthy stream never fires.

    :param state_dir: the stream's state folder (holds ``progress.json``).
    :param stall_after: seconds without a committed batch or idle report that count as a stall.
    :param poll_interval: seconds between two reads of the record.
    """

    def __init__(self, *, state_dir: str, stall_after: float = 300.0, poll_interval: float = 10.0) -> None:
        super().__init__()
        self.state_dir = state_dir
        self.stall_after = stall_after
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{self.__class__.__module__}.{self.__class__.__name__}",
            {
                "state_dir": self.state_dir,
                "stall_after": self.stall_after,
                "poll_interval": self.poll_interval,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            while True:
                progress = StreamProgress.read(self.state_dir)
                verdict = health(progress, self.stall_after, _now())
                if verdict is not None:
                    status, message = verdict
                    self.log.warning("Telemetry stream under %s: %s", self.state_dir, message)
                    yield TriggerEvent(
                        {
                            "status": status,
                            "message": message,
                            "pid": progress.pid if progress else None,
                            "state_dir": self.state_dir,
                        }
                    )
                    return
                await asyncio.sleep(self.poll_interval)
        except Exception as err:
            self.log.exception("Reading the stream's progress under %s failed", self.state_dir)
            yield TriggerEvent(
                {
                    "status": "error",
                    "message": f"reading the stream's progress under {self.state_dir} failed: {err}",
                    "pid": None,
                    "state_dir": self.state_dir,
                    "stack_trace": traceback.format_exc(),
                }
            )


class StreamWatermarkTrigger(BaseTrigger):
    """
    Fire once the stream's committed event-time watermark reaches ``target``.

    The event is ``{"status": "success", "watermark": ..., "target": ...}``, or
    ``{"status": "error", ...}`` when the record cannot be read.

    :param state_dir: the stream's state folder.
    :param target: ISO 8601 time the watermark must reach (a run's data interval end).
    :param queries: queries whose watermark counts (the lowest wins); ``None``: every query
        that has one.
    :param poll_interval: seconds between two reads of the record.
    """

    def __init__(
        self,
        *,
        state_dir: str,
        target: str,
        queries: list[str] | None = None,
        poll_interval: float = 10.0,
    ) -> None:
        super().__init__()
        self.state_dir = state_dir
        self.target = target
        self.queries = queries
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{self.__class__.__module__}.{self.__class__.__name__}",
            {
                "state_dir": self.state_dir,
                "target": self.target,
                "queries": self.queries,
                "poll_interval": self.poll_interval,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            target = parse_time(self.target)
            last: datetime | None = None
            while True:
                progress = StreamProgress.read(self.state_dir)
                mark = progress.watermark(self.queries) if progress is not None else None
                if mark is not None and target is not None and mark >= target:
                    yield TriggerEvent(
                        {"status": "success", "watermark": mark.isoformat(), "target": self.target}
                    )
                    return
                if mark != last:
                    self.log.info(
                        "Stream watermark %s, waiting for %s",
                        mark.isoformat() if mark else "not set",
                        self.target,
                    )
                    last = mark
                await asyncio.sleep(self.poll_interval)
        except Exception as err:
            self.log.exception("Reading the stream's watermark under %s failed", self.state_dir)
            yield TriggerEvent(
                {
                    "status": "error",
                    "message": f"reading the stream's watermark under {self.state_dir} failed: {err}",
                    "target": self.target,
                    "stack_trace": traceback.format_exc(),
                }
            )
