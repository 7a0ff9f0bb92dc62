"""Trigger that waits for a Slurm batch job to end, polling slurmctld without blocking."""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from nuro_ml.hooks.slurm import AsyncSlurmHook


class SlurmJobTrigger(BaseTrigger):
    """
    Poll a Slurm job until it reaches a terminal state, then fire one event.

    The event is ``{"status": "success" | "failed" | "error", "job_id": ..., "message": ...}``
    plus ``"job"`` (:meth:`~nuro_ml.hooks.slurm.SlurmJobInfo.to_dict`) when the job's final
    record was read, and ``"stack_trace"`` on errors.

    :param job_id: Slurm job id to watch.
    :param slurm_conn_id: Airflow connection of type ``slurm``.
    :param slurm_conf: slurm.conf path overriding the connection's.
    :param poll_interval: seconds between two looks at the job.
    :param cancel_on_kill: ``scancel`` the job when a user kills the deferred task.
    """

    def __init__(
        self,
        *,
        job_id: str,
        slurm_conn_id: str | None = AsyncSlurmHook.default_conn_name,
        slurm_conf: str | None = None,
        poll_interval: float = 5.0,
        cancel_on_kill: bool = True,
    ) -> None:
        super().__init__()
        self.job_id = job_id
        self.slurm_conn_id = slurm_conn_id
        self.slurm_conf = slurm_conf
        self.poll_interval = poll_interval
        self.cancel_on_kill = cancel_on_kill

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{self.__class__.__module__}.{self.__class__.__name__}",
            {
                "job_id": self.job_id,
                "slurm_conn_id": self.slurm_conn_id,
                "slurm_conf": self.slurm_conf,
                "poll_interval": self.poll_interval,
                "cancel_on_kill": self.cancel_on_kill,
            },
        )

    @property
    def hook(self) -> AsyncSlurmHook:
        if not hasattr(self, "_hook"):
            self._hook = AsyncSlurmHook(slurm_conn_id=self.slurm_conn_id, slurm_conf=self.slurm_conf)
        return self._hook

    async def run(self) -> AsyncIterator[TriggerEvent]:
        last_state = None
        try:
            while True:
                info = await self.hook.find_job(self.job_id)
                if info is None:
                    yield TriggerEvent(
                        {
                            "status": "error",
                            "job_id": self.job_id,
                            "message": f"Slurm job {self.job_id} is not known to slurmctld or accounting",
                        }
                    )
                    return
                if info.is_terminal:
                    yield TriggerEvent(
                        {
                            "status": "success" if info.state.is_success() else "failed",
                            "job_id": self.job_id,
                            "message": info.describe(),
                            "job": info.to_dict(),
                        }
                    )
                    return
                if info.state is not last_state:
                    self.log.info("%s; checking every %s s", info.describe(), self.poll_interval)
                    last_state = info.state
                await asyncio.sleep(self.poll_interval)
        except Exception as err:
            self.log.exception("Failed to poll Slurm job %s", self.job_id)
            yield TriggerEvent(
                {
                    "status": "error",
                    "job_id": self.job_id,
                    "message": f"polling Slurm job {self.job_id} failed: {err}",
                    "stack_trace": traceback.format_exc(),
                }
            )

    async def on_kill(self) -> None:
        """Cancel the job when a user marks the deferred task failed/success or clears it."""
        if not self.cancel_on_kill:
            return
        try:
            await self.hook.cancel_job(self.job_id)
        except Exception:
            self.log.exception("Could not cancel Slurm job %s", self.job_id)
