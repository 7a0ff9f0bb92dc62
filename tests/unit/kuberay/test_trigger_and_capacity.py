"""Trigger serialization and error event; capacity arithmetic on API objects."""

from __future__ import annotations

import socket
from decimal import Decimal

import pytest
import yaml
from nuro_ml.capacity.backends.kubernetes import KubernetesBackendConfig, node_pools, pod_gpu_request
from nuro_ml.capacity.backends.kueue import KueueBackendConfig, queue_pools
from nuro_ml.triggers.kuberay import KubeRayJobTrigger

TRIGGER_PATH = "nuro_ml.triggers.kuberay.KubeRayJobTrigger"


def test_serialize_round_trips_every_argument():
    kwargs = {
        "name": "train-1",
        "namespace": "ml",
        "kubernetes_conn_id": "k8s",
        "config_file": "/etc/kube",
        "cluster_context": "prod",
        "in_cluster": False,
        "expected_uid": "u1",
        "report_dashboard": True,
        "poll_interval": 3.0,
        "delete_on_kill": False,
    }
    trigger = KubeRayJobTrigger(**kwargs)
    assert trigger.serialize() == (TRIGGER_PATH, kwargs)
    assert KubeRayJobTrigger(**trigger.serialize()[1]).serialize() == trigger.serialize()


async def test_unreachable_api_yields_one_error_event(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "c",
                "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
            }
        )
    )
    trigger = KubeRayJobTrigger(
        name="j", namespace="ml", kubernetes_conn_id=None, config_file=str(kubeconfig), poll_interval=0.01
    )
    events = [event.payload async for event in trigger.run()]
    assert len(events) == 1
    event = events[0]
    assert event["status"] == "error"
    assert event.pop("stack_trace").startswith("Traceback")
    assert "RayJob ml/j" in event["message"]
    assert f"127.0.0.1:{port}" in event["message"]  # the kubeconfig given as config_file was used


def _node(name, gpus, label=None, ready="True"):
    return {
        "metadata": {"name": name, "labels": {"nvidia.com/gpu.product": label} if label else {}},
        "status": {
            "allocatable": {"nvidia.com/gpu": str(gpus)},
            "conditions": [{"type": "Ready", "status": ready}],
        },
    }


def _pod(node, containers, init=(), overhead=None, phase="Running"):
    spec = {
        "nodeName": node,
        "containers": [{"resources": {"requests": {"nvidia.com/gpu": str(g)}}} for g in containers],
        "initContainers": [{"resources": {"limits": {"nvidia.com/gpu": str(g)}}} for g in init],
    }
    if overhead is not None:
        spec["overhead"] = {"nvidia.com/gpu": str(overhead)}
    return {"spec": spec, "status": {"phase": phase}}


def test_pod_request_follows_scheduler_rules():
    assert pod_gpu_request(_pod("n", [1, 2]), "nvidia.com/gpu") == Decimal(3)
    assert pod_gpu_request(_pod("n", [1], init=[4, 2]), "nvidia.com/gpu") == Decimal(4)
    assert pod_gpu_request(_pod("n", [1], overhead=1), "nvidia.com/gpu") == Decimal(2)


def test_node_pools_never_report_negative_free():
    config = KubernetesBackendConfig()
    pools = node_pools(
        [_node("n1", 4, "A100")],
        [_pod("n1", [3]), _pod("n1", [3]), _pod("n1", [8], phase="Succeeded")],
        config,
    )
    assert [(p.pool, p.total_gpus, p.free_gpus) for p in pools] == [("A100", 4, 0)]


def test_queue_pools_count_only_gpu_resource_groups():
    queue = {
        "metadata": {"name": "q"},
        "spec": {
            "resourceGroups": [
                {
                    "coveredResources": ["cpu"],
                    "flavors": [{"name": "cpu-only", "resources": [{"name": "cpu", "nominalQuota": "100"}]}],
                },
                {
                    "coveredResources": ["nvidia.com/gpu"],
                    "flavors": [
                        {"name": "a100", "resources": [{"name": "nvidia.com/gpu", "nominalQuota": 8}]}
                    ],
                },
            ]
        },
        "status": {
            "flavorsReservation": [{"name": "a100", "resources": [{"name": "nvidia.com/gpu", "total": "3"}]}]
        },
    }
    pools = queue_pools([queue], [], KueueBackendConfig(pool_by="cluster_queue"))
    assert [(p.pool, p.total_gpus, p.free_gpus, p.gpu_type) for p in pools] == [("q", 8, 5, None)]


def test_config_is_strict():
    with pytest.raises(Exception, match="extra"):
        KueueBackendConfig(cluster_queue=["q"])  # type: ignore[call-arg]
