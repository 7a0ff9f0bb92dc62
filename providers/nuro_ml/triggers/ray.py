"""Trigger that follows a Ray job through the Jobs API until it ends."""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import AsyncIterator
from typing import Any

import tenacity
from airflow.triggers.base import BaseTrigger, TriggerEvent

from nuro_ml.exceptions import RayJobError, RayJobNotFoundError
from nuro_ml.hooks.ray import AsyncRayHook, RayJobInfo, RayJobStatus


def _transient(err: BaseException) -> bool:
    # No answer at all, or an overloaded/failing server, may change on a retry; a 4xx answer
    # (a missing job among them) will not.
    if isinstance(err, RayJobError):
        return err.status_code is None or err.is_transient
    return True


def event_status(status: RayJobStatus) -> str:
    """Event ``status`` for a terminal job status."""
    return "success" if status is RayJobStatus.SUCCEEDED else "failed"


class RayJobTrigger(BaseTrigger):
    """Poll one Ray job and yield a single event when it ends (or when it is time to stream logs).

    Event payload: ``status`` is ``success`` (job SUCCEEDED), ``failed`` (FAILED or STOPPED),
    ``running`` (only with ``yield_running_after``: the job goes on and the task wants to show
    the logs so far) or ``error`` (the API could not be read; with ``stack_trace``). Every event
    carries ``submission_id``, ``message`` and ``log_offset``; all but ``error`` carry ``job`` (a
    :meth:`~nuro_ml.clients.ray.RayJobInfo.to_dict`) and ``job_status``.

    :param submission_id: The Ray job's submission id.
    :param ray_conn_id: Airflow connection of type ``ray`` (headers and TLS settings live there).
    :param address: Dashboard/Jobs API address; beats the connection's host.
    :param poll_interval: Seconds between two status reads.
    :param yield_running_after: Seconds after which a still-running job yields a ``running`` event,
        so that the operator can print the new log lines and defer again; None waits to the end.
    :param log_offset: Characters of the job's log the task has printed so far. Echoed in every
        event: the resumed task continues from there even where the deferral's own kwargs are
        not handed back (``airflow dags test`` resumes with the event alone).
    """

    def __init__(
        self,
        *,
        submission_id: str,
        ray_conn_id: str | None = "ray_default",
        address: str | None = None,
        poll_interval: float = 5.0,
        yield_running_after: float | None = None,
        log_offset: int = 0,
    ) -> None:
        super().__init__()
        self.submission_id = submission_id
        self.ray_conn_id = ray_conn_id
        self.address = address
        self.poll_interval = poll_interval
        self.yield_running_after = yield_running_after
        self.log_offset = log_offset

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{self.__class__.__module__}.{self.__class__.__name__}",
            {
                "submission_id": self.submission_id,
                "ray_conn_id": self.ray_conn_id,
                "address": self.address,
                "poll_interval": self.poll_interval,
                "yield_running_after": self.yield_running_after,
                "log_offset": self.log_offset,
            },
        )

    def _hook(self) -> AsyncRayHook:
        return AsyncRayHook(self.ray_conn_id, address=self.address)

    @tenacity.retry(
        stop=tenacity.stop_after_attempt(3),
        wait=tenacity.wait_exponential(multiplier=0.5, max=5),
        retry=tenacity.retry_if_exception(_transient),
        reraise=True,
    )
    async def _read(self, hook: AsyncRayHook) -> RayJobInfo:
        return await hook.get_job_info(self.submission_id)

    def _event(self, info: RayJobInfo, status: str) -> TriggerEvent:
        return TriggerEvent(
            {
                "status": status,
                "submission_id": self.submission_id,
                "job_status": info.status.value,
                "message": info.message or "",
                "job": info.to_dict(),
                "log_offset": self.log_offset,
            }
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = self._hook()
        started = time.monotonic()
        try:
            async with hook.session():
                while True:
                    info = await self._read(hook)
                    if info.status.is_terminal():
                        self.log.info("Ray job %s ended: %s", self.submission_id, info.status.value)
                        yield self._event(info, event_status(info.status))
                        return
                    if (
                        self.yield_running_after is not None
                        and time.monotonic() - started >= self.yield_running_after
                    ):
                        yield self._event(info, "running")
                        return
                    self.log.info(
                        "Ray job %s is %s; checking again in %s s",
                        self.submission_id,
                        info.status.value,
                        self.poll_interval,
                    )
                    await asyncio.sleep(self.poll_interval)
        except Exception as err:
            self.log.exception("Failed to follow Ray job %s", self.submission_id)
            yield TriggerEvent(
                {
                    "status": "error",
                    "submission_id": self.submission_id,
                    "message": f"{type(err).__name__}: {err}",
                    "stack_trace": traceback.format_exc(),
                    "log_offset": self.log_offset,
                }
            )

    async def on_kill(self) -> None:
        """The task was killed while deferred (mark failed/success, clear): stop the Ray job too."""
        hook = self._hook()
        try:
            stopped = await hook.stop_job(self.submission_id)
        except RayJobNotFoundError:
            self.log.info("Ray job %s is gone already; nothing to stop", self.submission_id)
        except Exception:
            self.log.exception("Failed to stop Ray job %s", self.submission_id)
        else:
            self.log.info("Stop requested for Ray job %s (was running: %s)", self.submission_id, stopped)
