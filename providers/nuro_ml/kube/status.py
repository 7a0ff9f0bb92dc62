"""Typed view of a RayJob's ``status``, with the KubeRay operator's state machine semantics.

The values mirror ``ray-operator/apis/ray/v1/rayjob_types.go`` in KubeRay: ``jobDeploymentStatus``
tracks the RayCluster and submission lifecycle (``Initializing`` -> ``Running`` -> ``Complete`` or
``Failed``, with ``Suspending``/``Suspended`` while Kueue holds the job back), ``jobStatus`` is the
Ray job's own status as reported by the Ray dashboard: the one
:class:`~nuro_ml.clients.ray.RayJobStatus` the Jobs API client uses too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum, StrEnum
from typing import Any

from nuro_ml.clients.ray import RayJobStatus


class JobDeploymentStatus(StrEnum):
    """``status.jobDeploymentStatus`` of a RayJob."""

    NEW = ""
    INITIALIZING = "Initializing"
    RUNNING = "Running"
    COMPLETE = "Complete"
    FAILED = "Failed"
    VALIDATION_FAILED = "ValidationFailed"
    SUSPENDING = "Suspending"
    SUSPENDED = "Suspended"
    RETRYING = "Retrying"
    WAITING = "Waiting"

    def is_terminal(self) -> bool:
        """KubeRay never leaves these states (``ValidationFailed`` is not requeued either)."""
        return self in {
            JobDeploymentStatus.COMPLETE,
            JobDeploymentStatus.FAILED,
            JobDeploymentStatus.VALIDATION_FAILED,
        }


def without_managed_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """A shallow copy without server-side-apply bookkeeping, which only bloats XCom and events."""
    metadata = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    return {**obj, "metadata": metadata}


def _enum_or_raw(enum_cls: type[Enum], raw: Any) -> Any:
    try:
        return enum_cls(raw or "")
    except ValueError:
        # A newer operator may report a state this version does not know; keep the raw text.
        return str(raw)


@dataclass
class RayJobInfo:
    """What the provider needs to know about one RayJob, parsed from the object the API returns."""

    #: ``metadata.name`` and ``metadata.namespace``.
    name: str
    namespace: str
    #: ``metadata.uid``: distinguishes a re-created RayJob from the one seen before.
    uid: str = ""
    deployment_status: JobDeploymentStatus | str = JobDeploymentStatus.NEW
    job_status: RayJobStatus | str = RayJobStatus.NEW
    #: ``status.reason`` (``AppFailed``, ``DeadlineExceeded``...) and ``status.message``.
    reason: str = ""
    message: str = ""
    #: Ray job submission id and the RayCluster KubeRay created for it.
    job_id: str = ""
    ray_cluster_name: str = ""
    #: ``status.dashboardURL`` as KubeRay reports it: ``<head-svc>.<ns>.svc.cluster.local:8265``, no scheme.
    dashboard_url: str = ""
    start_time: str = ""
    end_time: str = ""
    succeeded: int = 0
    failed: int = 0
    #: ``spec.suspend``: True while Kueue (or a user) holds the job back.
    suspended: bool = False
    #: ``metadata.deletionTimestamp`` is set: the object is going away.
    deleting: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    #: The whole object as the API returned it, without ``metadata.managedFields``.
    object: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.deployment_status = _enum_or_raw(JobDeploymentStatus, self.deployment_status)
        self.job_status = _enum_or_raw(RayJobStatus, self.job_status)

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> RayJobInfo:
        """Build from a RayJob as returned by the API server."""
        metadata = obj.get("metadata") or {}
        status = obj.get("status") or {}
        spec = obj.get("spec") or {}
        return cls(
            name=metadata.get("name", ""),
            namespace=metadata.get("namespace", ""),
            uid=metadata.get("uid", ""),
            deployment_status=status.get("jobDeploymentStatus", ""),
            job_status=status.get("jobStatus", ""),
            reason=status.get("reason", ""),
            message=status.get("message", ""),
            job_id=status.get("jobId", ""),
            ray_cluster_name=status.get("rayClusterName", ""),
            dashboard_url=status.get("dashboardURL", ""),
            start_time=status.get("startTime", ""),
            end_time=status.get("endTime", ""),
            succeeded=int(status.get("succeeded") or 0),
            failed=int(status.get("failed") or 0),
            suspended=bool(spec.get("suspend", False)),
            deleting=bool(metadata.get("deletionTimestamp")),
            labels=dict(metadata.get("labels") or {}),
            annotations=dict(metadata.get("annotations") or {}),
            object=without_managed_fields(obj),
        )

    @property
    def is_terminal(self) -> bool:
        return (
            isinstance(self.deployment_status, JobDeploymentStatus) and self.deployment_status.is_terminal()
        )

    @property
    def succeeded_outcome(self) -> bool:
        """Complete with the Ray job SUCCEEDED: the only outcome that counts as success."""
        return (
            self.deployment_status == JobDeploymentStatus.COMPLETE
            and self.job_status == RayJobStatus.SUCCEEDED
        )

    def describe(self) -> str:
        """One line for logs and error messages."""
        text = f"RayJob {self.namespace}/{self.name}: deployment {self.deployment_status or 'New'}"
        text += f", job {self.job_status or 'New'}"
        if self.reason:
            text += f", reason {self.reason}"
        if self.message:
            text += f": {self.message}"
        return text

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (enums as their values) for trigger events and XCom."""
        data = asdict(self)
        data.pop("object")
        data["deployment_status"] = str(self.deployment_status)
        data["job_status"] = str(self.job_status)
        return data
