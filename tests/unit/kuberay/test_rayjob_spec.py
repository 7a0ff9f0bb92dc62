"""Typed RayJob spec -> manifest, client-side checks, names and status parsing."""

from __future__ import annotations

import pytest
import yaml
from nuro_ml.exceptions import RayJobSpecInvalidError
from nuro_ml.kube.naming import rayjob_name
from nuro_ml.kube.rayjob import GpuScheduling, HeadGroup, RayJobSpec, Toleration, WorkerGroup
from nuro_ml.kube.status import JobDeploymentStatus, RayJobInfo, RayJobStatus
from nuro_ml.kube.validation import is_dns1035_label
from nuro_ml.task_key import TaskKey
from pydantic import ValidationError


def test_manifest_has_gpu_resources_scheduling_and_lifecycle():
    spec = RayJobSpec(
        entrypoint="python workloads/train_xgb.py --epochs 3",
        runtime_env={"working_dir": "s3://bucket/workloads.zip", "env_vars": {"A": "1"}},
        head=HeadGroup(cpu=4, memory="16Gi"),
        workers=[
            WorkerGroup(name="h100", replicas=2, gpus=8, gpu_type="H100", cpu=0.5),
            WorkerGroup(
                name="any-gpu", replicas=1, gpus=1, tolerations=[Toleration(key="spot", effect="NoSchedule")]
            ),
        ],
        active_deadline_seconds=3600,
        ttl_seconds_after_finished=300,
        submission_mode="HTTPMode",
    )
    manifest = spec.to_manifest(name="train-1", namespace="ml", labels={"team": "perception"})
    job = manifest["spec"]
    assert manifest["metadata"] == {"name": "train-1", "namespace": "ml", "labels": {"team": "perception"}}
    assert yaml.safe_load(job["runtimeEnvYAML"]) == {
        "working_dir": "s3://bucket/workloads.zip",
        "env_vars": {"A": "1"},
    }
    assert (
        job["activeDeadlineSeconds"],
        job["ttlSecondsAfterFinished"],
        job["shutdownAfterJobFinishes"],
    ) == (3600, 300, True)
    assert job["submissionMode"] == "HTTPMode"
    head = job["rayClusterSpec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0"
    assert head["template"]["spec"]["containers"][0]["resources"]["limits"] == {"cpu": "4", "memory": "16Gi"}
    h100, any_gpu = job["rayClusterSpec"]["workerGroupSpecs"]
    assert (h100["replicas"], h100["minReplicas"], h100["maxReplicas"]) == (2, 2, 2)
    pod = h100["template"]["spec"]
    assert pod["containers"][0]["resources"]["requests"] == {
        "cpu": "500m",
        "memory": "8Gi",
        "nvidia.com/gpu": "8",
    }
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert "nodeSelector" not in any_gpu["template"]["spec"]
    assert [t["key"] for t in any_gpu["template"]["spec"]["tolerations"]] == ["nvidia.com/gpu", "spot"]
    assert spec.total_gpus == 17


def test_kueue_queue_label_and_suspend():
    spec = RayJobSpec(
        entrypoint="python t.py",
        queue_name="team-a",
        priority_class="high",
        workers=[WorkerGroup(name="w", gpus=1)],
    )
    manifest = spec.to_manifest(name="t", namespace="ml")
    assert manifest["metadata"]["labels"] == {
        "kueue.x-k8s.io/queue-name": "team-a",
        "kueue.x-k8s.io/priority-class": "high",
    }
    assert manifest["spec"]["suspend"] is True


def test_custom_gpu_type_table():
    spec = RayJobSpec(
        entrypoint="python t.py",
        gpu_types={"mi300": GpuScheduling(node_selector={"amd.com/gpu.product": "MI300X"}, tolerations=[])},
        workers=[WorkerGroup(name="w", gpus=1, gpu_type="mi300")],
    )
    pod = spec.to_manifest(name="t", namespace="ml")["spec"]["rayClusterSpec"]["workerGroupSpecs"][0][
        "template"
    ]["spec"]
    assert pod["nodeSelector"] == {"amd.com/gpu.product": "MI300X"}
    assert "tolerations" not in pod


@pytest.mark.parametrize(
    ("spec_kwargs", "name", "path"),
    [
        (
            {"workers": [WorkerGroup(name="w", replicas=4, max_replicas=2)]},
            "t",
            "spec.rayClusterSpec.workerGroupSpecs[0].minReplicas",
        ),
        (
            {"workers": [WorkerGroup(name="w", container_overrides={"imagePullPolicy": 1})]},
            "t",
            "spec.rayClusterSpec.workerGroupSpecs[0].template.spec.containers[0].imagePullPolicy",
        ),
        (
            {"workers": [WorkerGroup(name="w", pod_overrides={"nodeSelectr": {}})]},
            "t",
            "spec.rayClusterSpec.workerGroupSpecs[0].template.spec.nodeSelectr",
        ),
        (
            {"workers": [WorkerGroup(name="w"), WorkerGroup(name="w")]},
            "t",
            "spec.rayClusterSpec.workerGroupSpecs[1].groupName",
        ),
        ({}, "a" * 48, "metadata.name"),
        ({}, "9-starts-with-digit", "metadata.name"),
        ({"queue_name": "q", "shutdown_after_job_finishes": False}, "t", "spec.shutdownAfterJobFinishes"),
        ({"active_deadline_seconds": 0}, "t", "spec.activeDeadlineSeconds"),
        ({"labels": {"bad key!": "v"}}, "t", "metadata.labels"),
    ],
)
def test_invalid_specs_name_the_field(spec_kwargs, name, path):
    spec = RayJobSpec(entrypoint="python t.py", **spec_kwargs)
    with pytest.raises(RayJobSpecInvalidError) as err:
        spec.to_manifest(name=name, namespace="ml")
    assert any(v.startswith(path + ":") for v in err.value.violations), err.value.violations
    assert path in str(err.value)


def test_model_level_errors():
    with pytest.raises(ValidationError, match="not a known GPU type"):
        RayJobSpec(entrypoint="x", workers=[WorkerGroup(name="w", gpus=1, gpu_type="B200")])
    with pytest.raises(ValidationError, match="gpus is 0"):
        WorkerGroup(name="w", gpu_type="A100")
    with pytest.raises(ValidationError, match="extra"):
        RayJobSpec(entrypoint="x", entry_point="y")  # type: ignore[call-arg]


def test_names_are_stable_unique_and_valid():
    first = rayjob_name(
        TaskKey(dag_id="av", run_id="manual__2026-01-01T00:00:00+00:00", task_id="Train_On.KubeRay")
    )
    assert first == rayjob_name(
        TaskKey(dag_id="av", run_id="manual__2026-01-01T00:00:00+00:00", task_id="Train_On.KubeRay")
    )
    assert first.startswith("train-on-kuberay-")
    mapped = rayjob_name(
        TaskKey(
            dag_id="av", run_id="manual__2026-01-01T00:00:00+00:00", task_id="Train_On.KubeRay", map_index=3
        )
    )
    assert mapped != first
    long_name = rayjob_name(TaskKey(dag_id="d", run_id="r", task_id="x" * 200))
    odd = rayjob_name(TaskKey(dag_id="d", run_id="r", task_id="42_train"))
    for name in (first, mapped, long_name, odd):
        assert len(name) <= 47 and is_dns1035_label(name), name


def test_status_parsing_and_outcome():
    obj = {
        "metadata": {"name": "j", "namespace": "ml", "uid": "u1", "managedFields": [{"manager": "x"}]},
        "spec": {"suspend": False},
        "status": {
            "jobDeploymentStatus": "Failed",
            "jobStatus": "RUNNING",
            "reason": "DeadlineExceeded",
            "message": "The RayJob has passed the activeDeadlineSeconds.",
            "failed": 1,
        },
    }
    info = RayJobInfo.from_object(obj)
    assert info.deployment_status is JobDeploymentStatus.FAILED and info.job_status is RayJobStatus.RUNNING
    assert info.is_terminal and not info.succeeded_outcome
    assert "managedFields" not in info.object["metadata"]
    assert info.to_dict()["deployment_status"] == "Failed"
    assert "DeadlineExceeded" in info.describe()
    newer = RayJobInfo.from_object(
        {"metadata": {"name": "j"}, "status": {"jobDeploymentStatus": "Scheduling"}}
    )
    assert newer.deployment_status == "Scheduling" and not newer.is_terminal
