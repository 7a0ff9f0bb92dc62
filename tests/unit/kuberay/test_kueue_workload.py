"""Reading Kueue's Workload of a queued RayJob, and the trigger giving its reason."""

from __future__ import annotations

from typing import Any

from nuro_ml.exceptions import KubeRayJobError
from nuro_ml.kube.kueue_workload import JOB_UID_LABEL, KueueWorkloadInfo, current_workload, workload_selector
from nuro_ml.kube.status import RayJobInfo
from nuro_ml.triggers.kuberay import KubeRayJobTrigger

QUOTA = (
    "couldn't assign flavors to pod set workers: insufficient unused quota for nvidia.com/gpu "
    "in flavor a100, 4 more needed"
)


def _workload(
    name: str, owner: str, *conditions: tuple[str, str, str, str], created: str = "2026-12-05T10:00:00Z"
):
    return {
        "metadata": {
            "name": name,
            "namespace": "ml",
            "creationTimestamp": created,
            "labels": {JOB_UID_LABEL: owner},
            "ownerReferences": [{"kind": "RayJob", "name": "train", "uid": owner}],
        },
        "spec": {"queueName": "team-a", "podSets": []},
        "status": {
            "admission": {"clusterQueue": "gpu-cq"} if any(c[0] == "Admitted" for c in conditions) else None,
            "conditions": [{"type": t, "status": s, "reason": r, "message": m} for t, s, r, m in conditions],
        },
    }


def test_pending_admitted_and_evicted_workloads_say_why():
    pending = KueueWorkloadInfo.from_object(_workload("w", "u", ("QuotaReserved", "False", "Pending", QUOTA)))
    assert (pending.admitted, pending.reason, pending.message) == (False, "Pending", QUOTA)
    assert pending.describe() == f"Kueue workload ml/w waits in LocalQueue team-a (Pending): {QUOTA}"

    admitted = KueueWorkloadInfo.from_object(
        _workload(
            "w", "u", ("QuotaReserved", "True", "QuotaReserved", ""), ("Admitted", "True", "Admitted", "")
        )
    )
    assert admitted.admitted and admitted.reason == ""
    assert admitted.describe() == "Kueue workload ml/w is admitted by ClusterQueue gpu-cq"

    evicted = KueueWorkloadInfo.from_object(
        _workload(
            "w",
            "u",
            ("QuotaReserved", "False", "Pending", "waiting for quota"),
            (
                "Evicted",
                "True",
                "Preempted",
                "Preempted to accommodate a workload (UID: x) due to prioritization",
            ),
        )
    )
    assert evicted.evicted and evicted.reason == "Preempted"
    assert "was evicted (Preempted)" in evicted.describe() and "prioritization" in evicted.describe()

    fresh = KueueWorkloadInfo.from_object(_workload("w", "u"))
    assert (
        fresh.describe()
        == "Kueue workload ml/w waits in LocalQueue team-a; Kueue has not tried to admit it yet"
    )


def test_current_workload_is_the_newest_unfinished_one_of_this_job():
    objects = [
        _workload("old", "u", ("Finished", "True", "Succeeded", ""), created="2026-12-05T09:00:00Z"),
        _workload("now", "u", ("QuotaReserved", "False", "Pending", QUOTA), created="2026-12-05T10:00:00Z"),
        _workload("other", "someone-else", created="2026-12-05T11:00:00Z"),
    ]
    found = current_workload(objects, "u")
    assert found is not None and found.name == "now"
    assert current_workload(objects[:1], "u") is None
    assert workload_selector("u") == "kueue.x-k8s.io/job-uid=u"


class _Hook:
    """Answers like AsyncKubeRayHook: a queued job admitted on the third read."""

    def __init__(self, workload_error: Exception | None = None) -> None:
        self.reads = 0
        self.workload_reads = 0
        self.workload_error = workload_error

    async def get_rayjob(self, *, name: str, namespace: str) -> RayJobInfo:
        self.reads += 1
        admitted = self.reads >= 3
        return RayJobInfo.from_object(
            {
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "uid": "u",
                    "labels": {"kueue.x-k8s.io/queue-name": "team-a"},
                },
                "spec": {"suspend": not admitted},
                "status": {
                    "jobDeploymentStatus": "Complete" if admitted else "Suspended",
                    "jobStatus": "SUCCEEDED" if admitted else "",
                },
            }
        )

    async def get_kueue_workload(self, rayjob: RayJobInfo) -> KueueWorkloadInfo:
        self.workload_reads += 1
        if self.workload_error is not None:
            raise self.workload_error
        return KueueWorkloadInfo.from_object(
            _workload("w", "u", ("QuotaReserved", "False", "Pending", QUOTA))
        )


async def _run(trigger: KubeRayJobTrigger, hook: _Hook, monkeypatch: Any) -> list[dict[str, Any]]:
    monkeypatch.setattr(trigger, "_hook", lambda: hook)
    return [event.payload async for event in trigger.run()]


async def test_trigger_logs_the_reason_once_while_it_stays_the_same(monkeypatch, capsys):
    trigger = KubeRayJobTrigger(name="train", namespace="ml", poll_interval=0)
    hook = _Hook()
    events = await _run(trigger, hook, monkeypatch)
    assert [e["status"] for e in events] == ["success"]
    out = capsys.readouterr().out
    assert hook.workload_reads == 2  # while suspended, once per poll
    assert out.count(QUOTA) == 1


async def test_a_role_that_may_not_list_workloads_is_said_once_and_the_job_is_still_followed(
    monkeypatch, capsys
):
    forbidden = KubeRayJobError(
        "cannot read the Kueue workload of RayJob ml/train: HTTP 403", status_code=403
    )
    trigger = KubeRayJobTrigger(name="train", namespace="ml", poll_interval=0)
    hook = _Hook(workload_error=forbidden)
    events = await _run(trigger, hook, monkeypatch)
    assert [e["status"] for e in events] == ["success"]
    assert hook.workload_reads == 1
    assert capsys.readouterr().out.count("the wait reason will not be shown") == 1
