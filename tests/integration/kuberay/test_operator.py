"""KubeRayJobOperator end to end against the stand-in API server: every RayJob outcome."""

from __future__ import annotations

import asyncio
import copy
import threading
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from airflow.sdk.exceptions import TaskDeferred
from nuro_ml.exceptions import KubeRayJobError, RayJobSpecInvalidError
from nuro_ml.kube.naming import rayjob_name
from nuro_ml.kube.rayjob import RayJobSpec, WorkerGroup
from nuro_ml.operators.kuberay import KubeRayJobOperator
from nuro_ml.task_key import TaskKey
from nuro_ml.triggers.kuberay import KubeRayJobTrigger

from tests.fixtures.kube_api import JobScript, KubeApiStandIn
from tests.integration.kuberay.conftest import TaskInstanceStub, first_event, run_task
from tests.polling import await_for

pytestmark = pytest.mark.integration

RAYJOBS = "/apis/ray.io/v1/namespaces/ml/rayjobs"


def gpu_spec(entrypoint: str = "python workloads/train_xgb.py", **kwargs: object) -> RayJobSpec:
    return RayJobSpec(
        entrypoint=entrypoint,
        runtime_env={"env_vars": {"NURO_ML_DATA_DIR": "/data"}},
        workers=[WorkerGroup(name="a100", replicas=2, gpus=4, gpu_type="A100", cpu="16", memory="64Gi")],
        **kwargs,  # type: ignore[arg-type]
    )


def make_operator(conn_id: str, rayjob: object, **kwargs: object) -> KubeRayJobOperator:
    return KubeRayJobOperator(
        task_id="train_on_kuberay",
        rayjob=rayjob,  # type: ignore[arg-type]
        kubernetes_conn_id=conn_id,
        poll_interval=0.02,
        **kwargs,  # type: ignore[arg-type]
    )


def expected_name(ti: TaskInstanceStub) -> str:
    return rayjob_name(
        TaskKey(dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id, map_index=ti.map_index)
    )


def test_success_defers_reports_dashboard_and_returns_the_object(kube_api: KubeApiStandIn, conn_id: str, ti):
    kube_api.set_time_scale(0)  # the clock moves only when the test says so
    op = make_operator(conn_id, gpu_spec())
    context = {"ti": ti}
    name = expected_name(ti)

    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    assert isinstance(deferred.value.trigger, KubeRayJobTrigger)
    assert ti.xcom["rayjob"]["name"] == name
    assert "dashboard_url" not in ti.xcom

    kube_api.advance(2.5)  # RayCluster up, job submitted: KubeRay reports the dashboard
    event = asyncio.run(first_event(deferred.value.trigger))
    assert event["status"] == "running"
    with pytest.raises(TaskDeferred) as deferred_again:
        op.execute_complete(context, event)
    cluster = event["rayjob"]["ray_cluster_name"]
    assert ti.xcom["dashboard_url"] == f"http://{cluster}-head-svc.ml.svc.cluster.local:8265"

    kube_api.advance(10)
    final = asyncio.run(first_event(deferred_again.value.trigger))
    assert final["status"] == "success"
    result = op.execute_complete(context, final)

    assert result["metadata"]["name"] == name
    assert result["status"]["jobDeploymentStatus"] == "Complete"
    assert result["status"]["jobStatus"] == "SUCCEEDED"
    assert ti.xcom["rayjob"] == {"name": name, "namespace": "ml", "uid": result["metadata"]["uid"]}
    worker = result["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]
    assert worker["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert worker["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert len(kube_api.api_requests("POST", RAYJOBS)) == 1


def test_dashboard_link_template(kube_api: KubeApiStandIn, conn_id: str, ti):
    op = make_operator(
        conn_id, gpu_spec(), dashboard_url_template="https://ray.example.com/{namespace}/{cluster}/"
    )
    outcome = run_task(op, ti)
    assert outcome.error is None
    cluster = outcome.result["status"]["rayClusterName"]
    assert ti.xcom["dashboard_url"] == f"https://ray.example.com/ml/{cluster}/"


@pytest.mark.parametrize(
    ("script", "reason", "text"),
    [
        (
            JobScript(outcome="FAILED", message="Job entrypoint command failed with exit code 1"),
            "AppFailed",
            "exit code 1",
        ),
        (JobScript(outcome="SubmissionFailed"), "SubmissionFailed", "BackoffLimitExceeded"),
        (
            JobScript(outcome="STOPPED", message="Job was intentionally stopped."),
            "job status STOPPED",
            "intentionally stopped",
        ),
    ],
)
def test_failed_job_raises_with_kuberay_reason(
    kube_api: KubeApiStandIn, conn_id: str, ti, script, reason, text
):
    kube_api.script("python fail.py", script)
    outcome = run_task(make_operator(conn_id, gpu_spec("python fail.py")), ti)

    assert isinstance(outcome.error, KubeRayJobError)
    assert reason in str(outcome.error)
    assert text in str(outcome.error)
    assert expected_name(ti) in str(outcome.error)
    assert outcome.events[-1]["status"] == "failed"


def test_deadline_exceeded_fails_with_reason(kube_api: KubeApiStandIn, conn_id: str, ti):
    kube_api.script("python slow.py", JobScript(running_s=600))
    outcome = run_task(make_operator(conn_id, gpu_spec("python slow.py", active_deadline_seconds=8)), ti)

    assert isinstance(outcome.error, KubeRayJobError)
    assert "DeadlineExceeded" in str(outcome.error)
    assert "activeDeadlineSeconds" in str(outcome.error)
    stored = kube_api.rayjob(expected_name(ti), "ml")
    assert stored["status"]["jobDeploymentStatus"] == "Failed"


def test_kueue_suspended_job_runs_after_admission(kube_api: KubeApiStandIn, conn_id: str, ti):
    kube_api.script("python queued.py", JobScript(admit_after_s=None))
    op = make_operator(conn_id, gpu_spec("python queued.py", queue_name="team-perception"))
    name = expected_name(ti)

    with pytest.raises(TaskDeferred):
        op.execute({"ti": ti})
    created = kube_api.rayjob(name, "ml")
    assert created["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-perception"
    assert created["spec"]["suspend"] is True

    # Nothing happens while Kueue holds the job back.
    kube_api.advance(120)
    held = kube_api.rayjob(name, "ml")
    assert held["status"]["jobDeploymentStatus"] == "Suspended"
    assert "dashboardURL" not in held["status"]

    kube_api.admit(name, "ml")
    outcome = run_task(op, ti)  # executing again, as a retry would, re-attaches to the admitted job
    assert outcome.error is None
    assert outcome.result["status"]["jobStatus"] == "SUCCEEDED"
    assert outcome.result["spec"]["suspend"] is False
    # activeDeadlineSeconds counts from admission: KubeRay restarts the clock after a suspension.
    assert outcome.result["status"]["startTime"] >= held["status"]["startTime"]


def test_kueue_admission_observed_by_the_trigger_with_the_workloads_reason(
    kube_api: KubeApiStandIn, conn_id: str, ti, capsys: pytest.CaptureFixture[str]
):
    waiting = (
        "couldn't assign flavors to pod set a100: insufficient unused quota for nvidia.com/gpu "
        "in flavor a100, 8 more needed"
    )
    kube_api.script("python queued.py", JobScript(admit_after_s=30, kueue_pending_message=waiting))
    spec = gpu_spec("python queued.py", queue_name="team-perception")
    outcome = run_task(make_operator(conn_id, spec), ti)
    assert outcome.error is None
    assert outcome.result["status"]["jobDeploymentStatus"] == "Complete"
    name = expected_name(ti)
    said = [line for line in capsys.readouterr().out.splitlines() if "Kueue workload" in line]
    assert said, "the trigger never gave Kueue's reason"
    assert f"Kueue workload ml/rayjob-{name}-" in said[0]
    assert f"waits in LocalQueue team-perception (Pending): {waiting}" in said[0]
    # Kueue's Workload, as the stand-in stored it after checking it against the Workload CRD.
    (workload,) = kube_api.workloads()
    assert [p["name"] for p in workload["spec"]["podSets"]] == ["head", "a100"]
    assert workload["spec"]["podSets"][1]["count"] == 2
    assert {c["type"] for c in workload["status"]["conditions"]} == {"QuotaReserved", "Admitted"}


@dataclass
class LeasedTaskInstance(TaskInstanceStub):
    """A task instance downstream of the GPU-capacity sensor: its lease XCom can be pulled."""

    lease: dict[str, Any] | None = None

    def xcom_pull(self, task_ids: str, key: str) -> Any:
        return self.lease if (task_ids, key) == ("wait_for_gpus", "lease") else None


def test_leased_job_in_a_kueue_queue_carries_the_lease_topology(kube_api: KubeApiStandIn, conn_id: str):
    shares = [["gpu-node-a", gpu, 1000] for gpu in range(8)]
    ti = LeasedTaskInstance(
        lease={"lease_id": "lease-1", "gpus": 8, "node_names": ["gpu-node-a"], "shares": shares}
    )
    kube_api.script("python queued.py", JobScript(admit_after_s=None))
    spec = gpu_spec("python queued.py", queue_name="team-perception")
    op = make_operator(conn_id, spec, lease_task_id="wait_for_gpus")
    name = expected_name(ti)

    with pytest.raises(TaskDeferred):
        op.execute({"ti": ti})
    # As the API server stored it, after checking it against the RayJob CRD.
    stored = kube_api.rayjob(name, "ml")
    cluster = stored["spec"]["rayClusterSpec"]
    workers = cluster["workerGroupSpecs"][0]["template"]
    assert workers["metadata"]["annotations"] == {
        "kueue.x-k8s.io/podset-required-topology": "kubernetes.io/hostname"
    }
    terms = workers["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"][0]["matchExpressions"] == [
        {"key": "kubernetes.io/hostname", "operator": "In", "values": ["gpu-node-a"]}
    ]
    assert "annotations" not in (cluster["headGroupSpec"]["template"].get("metadata") or {})
    # Kueue reads the annotation into the Workload's topology request (checked against its CRD).
    (workload,) = kube_api.workloads()
    requests = {p["name"]: p.get("topologyRequest") for p in workload["spec"]["podSets"]}
    assert requests == {"head": None, "a100": {"required": "kubernetes.io/hostname"}}

    kube_api.admit(name, "ml")
    outcome = run_task(op, ti)
    assert outcome.error is None and outcome.result["status"]["jobStatus"] == "SUCCEEDED"


def test_invalid_spec_is_rejected_before_any_api_call(kube_api: KubeApiStandIn, conn_id: str, ti):
    spec = gpu_spec()
    spec.workers[0].pod_overrides = {"priorityClassName": 7}
    manifest = spec.to_manifest(name="x", namespace="ml", validate=False)
    manifest["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] = "two"

    for rayjob in (spec, manifest):
        outcome = run_task(make_operator(conn_id, copy.deepcopy(rayjob)), ti)
        assert isinstance(outcome.error, RayJobSpecInvalidError)
        if rayjob is spec:
            assert "spec.rayClusterSpec.workerGroupSpecs[0].template.spec.priorityClassName" in str(
                outcome.error
            )
        else:
            assert "spec.rayClusterSpec.workerGroupSpecs[0].replicas" in str(outcome.error)
    assert kube_api.requests == []


def test_kueue_rules_checked_before_any_api_call(kube_api: KubeApiStandIn, conn_id: str, ti):
    spec = gpu_spec(queue_name="team-perception", shutdown_after_job_finishes=False)
    outcome = run_task(make_operator(conn_id, spec), ti)
    assert isinstance(outcome.error, RayJobSpecInvalidError)
    assert "spec.shutdownAfterJobFinishes" in str(outcome.error)
    assert kube_api.requests == []


def test_retry_reattaches_to_the_running_job(kube_api: KubeApiStandIn, conn_id: str, ti):
    kube_api.script("python long.py", JobScript(running_s=40))
    first = make_operator(conn_id, gpu_spec("python long.py"))
    with pytest.raises(TaskDeferred):
        first.execute({"ti": ti})
    uid = ti.xcom["rayjob"]["uid"]

    retry_ti = TaskInstanceStub(try_number=2)
    kube_api.set_time_scale(400)  # no need to watch the 40 s job in real time once re-attached
    outcome = run_task(make_operator(conn_id, gpu_spec("python long.py")), retry_ti)

    assert outcome.error is None
    assert outcome.result["metadata"]["uid"] == uid
    assert retry_ti.xcom["rayjob"]["uid"] == uid
    assert [r.status for r in kube_api.api_requests("POST", RAYJOBS)] == [201, 409]
    assert len(kube_api.rayjobs()) == 1


def test_retry_after_failure_runs_the_job_again(kube_api: KubeApiStandIn, conn_id: str, ti):
    kube_api.script("python flaky.py", JobScript(outcome="FAILED", message="CUDA out of memory"))
    first = run_task(make_operator(conn_id, gpu_spec("python flaky.py")), ti)
    assert isinstance(first.error, KubeRayJobError)
    failed_uid = ti.xcom["rayjob"]["uid"]

    kube_api.script("python flaky.py", JobScript())
    retry_ti = TaskInstanceStub(try_number=2)
    second = run_task(make_operator(conn_id, gpu_spec("python flaky.py")), retry_ti)

    assert second.error is None
    assert second.result["metadata"]["uid"] != failed_uid
    assert second.result["metadata"]["annotations"]["nuro-ml.io/try-number"] == "2"
    assert kube_api.api_requests("DELETE", expected_name(ti))


def test_name_taken_by_another_task_is_not_adopted(kube_api: KubeApiStandIn, conn_id: str, ti):
    other = gpu_spec().to_manifest(
        name="shared-name", namespace="ml", annotations={"nuro-ml.io/task-instance": "x/y/z/-1"}
    )
    kube_api.add_object("ray.io", "v1", "rayjobs", other)
    outcome = run_task(make_operator(conn_id, gpu_spec(), name="shared-name"), ti)
    assert isinstance(outcome.error, KubeRayJobError)
    assert "not created by task instance" in str(outcome.error)


def test_deleted_while_waiting_fails(kube_api: KubeApiStandIn, conn_id: str, ti):
    kube_api.script("python long.py", JobScript(running_s=600))
    op = make_operator(conn_id, gpu_spec("python long.py"))
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({"ti": ti})
    trigger = deferred.value.trigger
    kube_api.delete(kube_api.resource("ray.io", "v1", "rayjobs"), "ml", expected_name(ti))

    event = asyncio.run(first_event(trigger))
    assert event["status"] == "deleted"
    with pytest.raises(KubeRayJobError, match="deleted"):
        op.execute_complete({"ti": ti}, event)


def test_on_kill_deletes_the_rayjob(kube_api: KubeApiStandIn, conn_id: str, ti):
    kube_api.script("python long.py", JobScript(running_s=600))
    op = make_operator(conn_id, gpu_spec("python long.py"), deferrable=False)
    name = expected_name(ti)
    # Synchronous mode blocks in execute; kill it from the side as the task runner would.
    errors: list[BaseException] = []

    def run() -> None:
        try:
            op.execute({"ti": ti})
        except BaseException as err:
            errors.append(err)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    while worker.is_alive() and not kube_api.rayjob(name, "ml"):
        worker.join(0.02)
    op.on_kill()
    worker.join(10)

    assert kube_api.api_requests("DELETE", name)
    assert isinstance(errors[0], KubeRayJobError) and "deleted" in str(errors[0])
    kube_api.advance(5)  # past the finalizer KubeRay removes after stopping the job
    assert kube_api.rayjob(name, "ml") is None
    op.on_kill()  # idempotent: a second kill finds nothing and does not raise


def test_kill_while_deferred_deletes_the_rayjob_from_the_trigger(kube_api: KubeApiStandIn, conn_id: str, ti):
    kube_api.script("python long.py", JobScript(running_s=600))
    op = make_operator(conn_id, gpu_spec("python long.py"))
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({"ti": ti})
    trigger = deferred.value.trigger
    # The task is in the triggerer, not a worker: the operator's on_kill never runs; the trigger's does.
    trigger = KubeRayJobTrigger(**trigger.serialize()[1])
    name = expected_name(ti)

    async def kill_while_waiting() -> None:
        read_before = len(kube_api.api_requests("GET", name))
        waiting = asyncio.ensure_future(first_event(trigger))
        await await_for(
            lambda: len(kube_api.api_requests("GET", name)) > read_before, "the trigger to read the RayJob"
        )
        assert not waiting.done()
        waiting.cancel()
        await trigger.on_kill()

    asyncio.run(kill_while_waiting())

    assert kube_api.api_requests("DELETE", name)
    kube_api.advance(5)  # past the finalizer KubeRay removes after stopping the job
    assert kube_api.rayjob(name, "ml") is None
    asyncio.run(trigger.on_kill())  # idempotent: the job is gone, nothing raises


def test_trigger_kill_leaves_a_rayjob_re_created_under_the_same_name(
    kube_api: KubeApiStandIn, conn_id: str, ti
):
    kube_api.script("python long.py", JobScript(running_s=600))
    op = make_operator(conn_id, gpu_spec("python long.py"))
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({"ti": ti})
    trigger = deferred.value.trigger
    name = expected_name(ti)
    rayjobs = kube_api.resource("ray.io", "v1", "rayjobs")
    original = kube_api.rayjob(name, "ml")
    kube_api.delete(rayjobs, "ml", name)
    kube_api.advance(5)
    assert kube_api.rayjob(name, "ml") is None
    # Someone else's RayJob now holds the name.
    with pytest.raises(TaskDeferred):
        make_operator(conn_id, gpu_spec("python long.py")).execute({"ti": ti})
    replacement = kube_api.rayjob(name, "ml")
    assert replacement["metadata"]["uid"] != original["metadata"]["uid"]

    asyncio.run(trigger.on_kill())

    assert kube_api.rayjob(name, "ml")["metadata"]["uid"] == replacement["metadata"]["uid"]
    assert "deletionTimestamp" not in kube_api.rayjob(name, "ml")["metadata"]


def test_synchronous_mode_waits_in_the_worker(kube_api: KubeApiStandIn, conn_id: str, ti):
    outcome = run_task(make_operator(conn_id, gpu_spec(), deferrable=False), ti)
    assert outcome.error is None
    assert outcome.triggers == []
    assert outcome.result["status"]["jobStatus"] == "SUCCEEDED"
    assert ti.xcom["dashboard_url"].endswith(".svc.cluster.local:8265")


def test_yaml_manifest_and_namespace_from_connection(kube_api: KubeApiStandIn, conn_id: str, ti):
    manifest = gpu_spec().to_manifest(name="ignored", namespace="ignored", validate=False)
    manifest["metadata"].pop("name")
    manifest["metadata"].pop("namespace")
    outcome = run_task(make_operator(conn_id, yaml.safe_dump(manifest)), ti)
    assert outcome.error is None
    assert outcome.result["metadata"]["namespace"] == "ml"
    assert outcome.result["metadata"]["name"] == expected_name(ti)
