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
