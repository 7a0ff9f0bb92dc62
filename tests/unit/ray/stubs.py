"""Test doubles for the Airflow side of a task: a task instance that records XComs, and an
in-memory implementation of :class:`~nuro_ml.hooks.ray.RayHookProtocol` for operator unit tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nuro_ml.exceptions import RayJobError, RayJobNotFoundError
from nuro_ml.hooks.ray import RayJobInfo, RayJobStatus, job_dashboard_url


@dataclass
class TaskInstanceStub:
    dag_id: str = "av_training_pipeline"
    run_id: str = "manual__2026-11-24T00:00:00+00:00"
    task_id: str = "train"
    map_index: int = -1
    try_number: int = 1
    xcom: dict[str, Any] = field(default_factory=dict)

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


@dataclass
class FakeJob:
    info: RayJobInfo
    logs: str = ""
    runtime_env: dict[str, Any] = field(default_factory=dict)


class FakeRayHook:
    """Jobs held in a dict; a test moves them between states with :meth:`set_status`."""

    address = "http://ray-head.test:8265"

    def __init__(self) -> None:
        self.jobs: dict[str, FakeJob] = {}
        self.submitted: list[str] = []
        self.stopped: list[str] = []
        self.refuse_submit = False
        #: Per job, the (status, full log) it shows at each following status read.
        self.script: dict[str, list[tuple[RayJobStatus, str]]] = {}

    def job_url(self, submission_id: str) -> str:
        return job_dashboard_url(self.address, submission_id)

    def add(self, submission_id: str, status: RayJobStatus, *, logs: str = "", **metadata: str) -> FakeJob:
        job = FakeJob(RayJobInfo(submission_id=submission_id, status=status, metadata=metadata), logs=logs)
        self.jobs[submission_id] = job
        return job

    def set_status(self, submission_id: str, status: RayJobStatus, *, logs: str | None = None) -> None:
        job = self.jobs[submission_id]
        job.info = RayJobInfo(submission_id=submission_id, status=status, metadata=job.info.metadata)
        if logs is not None:
            job.logs = logs

    def submit_job(
        self,
        *,
        entrypoint: str,
        submission_id: str,
        runtime_env: dict[str, Any] | None = None,
        metadata: dict[str, str] | None = None,
        **resources: Any,
    ) -> str:
        if self.refuse_submit or submission_id in self.jobs:
            raise RayJobError(f"submission id {submission_id} refused")
        job = FakeJob(
            RayJobInfo(
                submission_id=submission_id,
                status=RayJobStatus.PENDING,
                entrypoint=entrypoint,
                metadata=dict(metadata or {}),
            ),
            runtime_env=dict(runtime_env or {}),
        )
        self.jobs[submission_id] = job
        self.submitted.append(submission_id)
        return submission_id

    def get_job_info(self, submission_id: str) -> RayJobInfo:
        if submission_id not in self.jobs:
            raise RayJobNotFoundError(submission_id)
        steps = self.script.get(submission_id)
        if steps:
            status, logs = steps.pop(0)
            self.set_status(submission_id, status, logs=logs)
        return self.jobs[submission_id].info

    def find_job(self, submission_id: str) -> RayJobInfo | None:
        job = self.jobs.get(submission_id)
        return job.info if job else None

    def get_job_logs(self, submission_id: str) -> str:
        self.get_job_info(submission_id)
        return self.jobs[submission_id].logs

    def stop_job(self, submission_id: str) -> bool:
        self.stopped.append(submission_id)
        job = self.jobs[submission_id]
        running = not job.info.status.is_terminal()
        if running:
            self.set_status(submission_id, RayJobStatus.STOPPED)
        return running
