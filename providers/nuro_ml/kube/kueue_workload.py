"""Kueue's Workload for a queued RayJob: why Kueue still holds the job back.

Kueue admits a job through a ``Workload`` object it creates for it (``kueue.x-k8s.io/v1beta2``,
labelled ``kueue.x-k8s.io/job-uid`` with the job's uid and owned by the job). While the RayJob
stays suspended, the Workload's conditions say why, in the words ``kubectl describe workload``
shows: ``QuotaReserved`` false with reason ``Pending`` and a message such as "couldn't assign
flavors to pod set workers: insufficient unused quota for nvidia.com/gpu in flavor a100, 4 more
needed", or ``Evicted`` true after a preemption.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

WORKLOAD_VERSION = "v1beta2"
WORKLOAD_PLURAL = "workloads"
#: Label Kueue puts on the Workload it creates for a job (``constants.JobUIDLabel``).
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"

QUOTA_RESERVED = "QuotaReserved"
ADMITTED = "Admitted"
EVICTED = "Evicted"
FINISHED = "Finished"


def workload_selector(job_uid: str) -> str:
    """Label selector of the Workloads Kueue made for the job with ``job_uid``."""
    return f"{JOB_UID_LABEL}={job_uid}"


def _conditions(obj: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    found = ((obj.get("status") or {}).get("conditions")) or []
    return {str(c.get("type")): c for c in found if isinstance(c, Mapping)}


def _is_true(condition: Mapping[str, Any] | None) -> bool:
    return condition is not None and condition.get("status") == "True"


@dataclass(frozen=True)
class KueueWorkloadInfo:
    """What a Workload says about its job's admission.

    ``waiting`` is the reason and message of the condition that keeps the job from running
    (an eviction, else a quota reservation not made yet); empty once the job is admitted.
    """

    name: str
    namespace: str
    queue_name: str = ""
    cluster_queue: str = ""
    quota_reserved: bool = False
    admitted: bool = False
    evicted: bool = False
    finished: bool = False
    reason: str = ""
    message: str = ""
    created: str = ""

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> KueueWorkloadInfo:
        metadata = obj.get("metadata") or {}
        conditions = _conditions(obj)
        evicted = conditions.get(EVICTED)
        reserved = conditions.get(QUOTA_RESERVED)
        holding = evicted if _is_true(evicted) else reserved if not _is_true(reserved) else None
        return cls(
            name=str(metadata.get("name", "")),
            namespace=str(metadata.get("namespace", "")),
            queue_name=str((obj.get("spec") or {}).get("queueName") or ""),
            cluster_queue=str(((obj.get("status") or {}).get("admission") or {}).get("clusterQueue") or ""),
            quota_reserved=_is_true(reserved),
            admitted=_is_true(conditions.get(ADMITTED)),
            evicted=_is_true(evicted),
            finished=_is_true(conditions.get(FINISHED)),
            reason=str((holding or {}).get("reason") or ""),
            message=str((holding or {}).get("message") or ""),
            created=str(metadata.get("creationTimestamp") or ""),
        )

    def describe(self) -> str:
        """One line for the task log."""
        where = f"Kueue workload {self.namespace}/{self.name}"
        if self.admitted:
            return f"{where} is admitted by ClusterQueue {self.cluster_queue or '?'}"
        queue = f" in LocalQueue {self.queue_name}" if self.queue_name else ""
        if self.evicted:
            return (
                f"{where} was evicted ({self.reason or 'no reason'}){queue}: {self.message or 'no message'}"
            )
        if self.quota_reserved:
            return (
                f"{where} has quota in ClusterQueue {self.cluster_queue or '?'}, waiting for admission checks"
            )
        if not self.reason and not self.message:
            return f"{where} waits{queue}; Kueue has not tried to admit it yet"
        return f"{where} waits{queue} ({self.reason or 'Pending'}): {self.message or 'no message'}"


def current_workload(objects: Iterable[Mapping[str, Any]], owner_uid: str) -> KueueWorkloadInfo | None:
    """The newest unfinished Workload owned by the job with ``owner_uid``, if Kueue made one.

    A job that was evicted and requeued keeps its Workload; one re-created under the same name
    has another uid, so its Workloads never match.
    """
    owned = [
        o
        for o in objects
        if any(
            ref.get("uid") == owner_uid for ref in ((o.get("metadata") or {}).get("ownerReferences") or [])
        )
    ]
    infos = [KueueWorkloadInfo.from_object(o) for o in owned]
    unfinished = [i for i in infos if not i.finished]
    return max(unfinished, key=lambda i: i.created, default=None)
