"""Launchers pin a job to its lease's nodes: KubeRay node affinity, Ray label selector."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from nuro_ml.capacity.pinning import LEASE_NODES_ENV, lease_from_xcom, ray_label_selector
from nuro_ml.exceptions import CapacityError
from nuro_ml.kube.rayjob import RayJobSpec, WorkerGroup
from nuro_ml.operators.kuberay import KubeRayJobOperator

LEASE = {
    "lease_id": "lease-1",
    "gpus": 4,
    "nodes": 2,
    "node_names": ["gpu-node-a", "gpu-node-b"],
    "shares": [
        ["gpu-node-a", 0, 1000],
        ["gpu-node-a", 1, 1000],
        ["gpu-node-b", 2, 1000],
        ["gpu-node-b", 3, 1000],
    ],
}


@dataclass
class LeaseTask:
    lease: dict | None
    dag_id: str = "train"
    run_id: str = "manual__1"
    task_id: str = "train"
    map_index: int = -1
    try_number: int = 1
    pulled: list = field(default_factory=list)

    def xcom_pull(self, task_ids: str, key: str) -> object:
        self.pulled.append((task_ids, key))
        return self.lease


def test_kuberay_manifest_carries_the_lease_node_affinity() -> None:
    spec = RayJobSpec(entrypoint="python train.py", workers=[WorkerGroup(name="gpu", replicas=2, gpus=2)])
    op = KubeRayJobOperator(task_id="train", rayjob=spec, namespace="ml", lease_task_id="wait_for_gpus")
    ti = LeaseTask(LEASE)
    manifest = op.build_manifest({"ti": ti})
    assert ti.pulled == [("wait_for_gpus", "lease")]
    cluster = manifest["spec"]["rayClusterSpec"]
    worker_pod = cluster["workerGroupSpecs"][0]["template"]["spec"]
    terms = worker_pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"] == [
        {
            "matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["gpu-node-a", "gpu-node-b"]}
            ]
        }
    ]
    # The head asks for no GPU: it may run anywhere.
    assert "affinity" not in cluster["headGroupSpec"]["template"]["spec"]
    # Without a lease task the manifest is unchanged.
    plain = KubeRayJobOperator(task_id="train", rayjob=spec, namespace="ml").build_manifest({"ti": ti})
    assert "affinity" not in plain["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]


def test_lease_xcom_reading() -> None:
    placement = lease_from_xcom(LEASE, source="t")
    assert placement is not None
    assert placement.gpus_per_node == 2 and placement.gpu_indices("gpu-node-b") == [2, 3]
    assert ray_label_selector(placement) == {"ray.io/node-id": "in(gpu-node-a,gpu-node-b)"}
    assert lease_from_xcom({"lease_id": "x", "node_names": []}, source="t") is None  # pool counted whole
    with pytest.raises(CapacityError, match="run the GPU-capacity sensor first"):
        lease_from_xcom(None, source="task train")
    assert LEASE_NODES_ENV == "NURO_ML_LEASE_NODES"


KUEUE_REQUIRED = "kueue.x-k8s.io/podset-required-topology"
KUEUE_SLICE_LEVEL = "kueue.x-k8s.io/podset-slice-required-topology"
KUEUE_SLICE_SIZE = "kueue.x-k8s.io/podset-slice-size"
KUEUE_UNCONSTRAINED = "kueue.x-k8s.io/podset-unconstrained-topology"


def _lease(per_node: dict[str, int]) -> dict:
    shares = [[node, gpu, 1000] for node, count in per_node.items() for gpu in range(count)]
    return {"lease_id": "lease-k", "gpus": len(shares), "node_names": list(per_node), "shares": shares}


def _pod_set_annotations(manifest: dict) -> dict[str, dict[str, str]]:
    cluster = manifest["spec"]["rayClusterSpec"]
    groups = {"head": cluster["headGroupSpec"]}
    groups.update({g["groupName"]: g for g in cluster.get("workerGroupSpecs", [])})
    return {
        name: (group["template"].get("metadata") or {}).get("annotations") or {}
        for name, group in groups.items()
    }


def _kueue_manifest(spec: RayJobSpec, lease: dict) -> dict:
    op = KubeRayJobOperator(task_id="train", rayjob=spec, namespace="ml", lease_task_id="wait_for_gpus")
    return op.build_manifest({"ti": LeaseTask(lease)})


def test_one_node_gang_in_a_kueue_queue_requires_one_host() -> None:
    spec = RayJobSpec(
        entrypoint="python train.py",
        queue_name="team-a",
        workers=[WorkerGroup(name="gpu", replicas=4, gpus=2)],
    )
    manifest = _kueue_manifest(spec, _lease({"gpu-node-a": 8}))
    annotations = _pod_set_annotations(manifest)
    assert annotations["gpu"] == {KUEUE_REQUIRED: "kubernetes.io/hostname"}
    assert annotations["head"] == {}  # no GPUs: no topology request, no affinity
    worker = manifest["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]
    expressions = worker["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ][0]["matchExpressions"]
    assert expressions == [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["gpu-node-a"]}]
    assert manifest["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert manifest["spec"]["suspend"] is True


def test_even_multi_node_lease_asks_kueue_for_one_host_per_node_slice() -> None:
    spec = RayJobSpec(
        entrypoint="python train.py",
        queue_name="team-a",
        workers=[WorkerGroup(name="gpu", replicas=4, gpus=1)],
    )
    manifest = _kueue_manifest(spec, _lease({"gpu-node-a": 2, "gpu-node-b": 2}))
    assert _pod_set_annotations(manifest)["gpu"] == {
        KUEUE_SLICE_LEVEL: "kubernetes.io/hostname",
        KUEUE_SLICE_SIZE: "2",
    }


def test_uneven_or_shared_leases_stay_unconstrained_under_the_node_affinity() -> None:
    uneven = RayJobSpec(
        entrypoint="python train.py",
        queue_name="team-a",
        workers=[WorkerGroup(name="gpu", replicas=4, gpus=1)],
    )
    manifest = _kueue_manifest(uneven, _lease({"gpu-node-a": 3, "gpu-node-b": 1}))
    assert _pod_set_annotations(manifest)["gpu"] == {KUEUE_UNCONSTRAINED: "true"}
    # GPUs on the head and on the workers share the lease: no per-pod-set slice can be derived.
    shared = RayJobSpec(
        entrypoint="python train.py",
        queue_name="team-a",
        head={"gpus": 1},
        workers=[WorkerGroup(name="gpu", replicas=2, gpus=1)],
    )
    annotations = _pod_set_annotations(_kueue_manifest(shared, _lease({"gpu-node-a": 2, "gpu-node-b": 1})))
    assert annotations["head"] == annotations["gpu"] == {KUEUE_UNCONSTRAINED: "true"}


def test_topology_request_only_with_kueue_and_never_over_the_users_own() -> None:
    plain = RayJobSpec(entrypoint="python train.py", workers=[WorkerGroup(name="gpu", replicas=2, gpus=2)])
    manifest = _kueue_manifest(plain, _lease({"gpu-node-a": 4}))
    assert _pod_set_annotations(manifest)["gpu"] == {}
    raw = RayJobSpec(
        entrypoint="python train.py",
        queue_name="team-a",
        workers=[WorkerGroup(name="gpu", replicas=2, gpus=2)],
    ).to_manifest(name="x", namespace="ml")
    template = raw["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]
    template["metadata"] = {
        "annotations": {"kueue.x-k8s.io/podset-preferred-topology": "cloud.example.com/rack"}
    }
    kept = _kueue_manifest_from_dict(raw, _lease({"gpu-node-a": 4}))
    assert _pod_set_annotations(kept)["gpu"] == {
        "kueue.x-k8s.io/podset-preferred-topology": "cloud.example.com/rack"
    }


def _kueue_manifest_from_dict(raw: dict, lease: dict) -> dict:
    op = KubeRayJobOperator(task_id="train", rayjob=raw, lease_task_id="wait_for_gpus")
    return op.build_manifest({"ti": LeaseTask(lease)})
