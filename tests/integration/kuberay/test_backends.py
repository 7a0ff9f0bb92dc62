"""Kubernetes and Kueue capacity back ends reading nodes, pods and ClusterQueues from the stand-in."""

from __future__ import annotations

import asyncio

import pytest
from nuro_ml.capacity.backends.base import PoolCapacity, load_backend
from nuro_ml.capacity.backends.kubernetes import KubernetesBackend
from nuro_ml.capacity.backends.kueue import KueueBackend
from nuro_ml.exceptions import CapacityError

from tests.fixtures.kube_api import KubeApiStandIn

pytestmark = pytest.mark.integration

A100 = "NVIDIA-A100-SXM4-80GB"
H100 = "NVIDIA-H100-80GB-HBM3"


def by_pool(pools: list[PoolCapacity]) -> dict[str, tuple[int, int, str | None]]:
    return {p.pool: (p.total_gpus, p.free_gpus, p.gpu_type) for p in pools}


@pytest.fixture
def gpu_cluster(kube_api: KubeApiStandIn) -> KubeApiStandIn:
    label = "nvidia.com/gpu.product"
    kube_api.add_node("a100-1", gpus=8, labels={label: A100})
    kube_api.add_node("a100-2", gpus=8, labels={label: A100})
    kube_api.add_node("a100-cordoned", gpus=8, labels={label: A100}, unschedulable=True)
    kube_api.add_node("h100-1", gpus=8, labels={label: H100})
    kube_api.add_node("h100-notready", gpus=8, labels={label: H100}, ready=False)
    kube_api.add_node("cpu-1", gpus=0)
    kube_api.add_node("unlabelled-gpu", gpus=2)
    kube_api.add_pod("train-a", namespace="team-a", node="a100-1", gpus=4)
    kube_api.add_pod("train-b", namespace="team-b", node="a100-1", gpus=2, limits_only=True)
    kube_api.add_pod("done", namespace="team-a", node="a100-2", gpus=8, phase="Succeeded")
    kube_api.add_pod("crashed", namespace="team-a", node="a100-2", gpus=8, phase="Failed")
    kube_api.add_pod("init-heavy", namespace="team-b", node="a100-2", gpus=1, init_gpus=3)
    kube_api.add_pod("pending", namespace="team-b", node=None, gpus=8, phase="Pending")
    kube_api.add_pod("h100-job", namespace="team-c", node="h100-1", gpus=8)
    kube_api.add_pod("on-cordoned", namespace="team-c", node="a100-cordoned", gpus=1)
    return kube_api


def test_kubernetes_backend_free_gpus_per_pool(gpu_cluster: KubeApiStandIn, conn_id: str):
    backend = load_backend(
        {"type": "kubernetes", "kubernetes_conn_id": conn_id, "pool_names": {A100: "a100"}}
    )
    assert isinstance(backend, KubernetesBackend)

    pools = by_pool(backend.get_capacity())

    # a100-1: 8 - 4 - 2 (limit-only counts); a100-2: 8 - max(1, init 3), finished pods free;
    # cordoned and NotReady nodes and unlabelled nodes do not count.
    assert pools == {"a100": (16, 7, A100), H100: (8, 0, H100)}
    # Only non-terminated pods were asked for.
    listed = gpu_cluster.api_requests("GET", "/api/v1/pods")
    assert listed and "status.phase!=Succeeded" in listed[0].query["fieldSelector"][0]


def test_kubernetes_backend_async_matches_sync(gpu_cluster: KubeApiStandIn, conn_id: str):
    backend = load_backend({"type": "kubernetes", "kubernetes_conn_id": conn_id, "default_pool": "misc"})
    sync = by_pool(backend.get_capacity())
    async_ = by_pool(asyncio.run(backend.aget_capacity()))
    assert sync == async_
    assert sync["misc"] == (2, 2, None)


def test_kubernetes_backend_node_selector(gpu_cluster: KubeApiStandIn, conn_id: str):
    gpu_cluster.add_node("a100-reserved", gpus=8, labels={"nvidia.com/gpu.product": A100, "pool": "reserved"})
    backend = load_backend(
        {"type": "kubernetes", "kubernetes_conn_id": conn_id, "node_selector": "pool=reserved"}
    )
    assert by_pool(backend.get_capacity()) == {A100: (8, 8, A100)}


def _flavor(name: str, product: str) -> dict:
    return {
        "apiVersion": "kueue.x-k8s.io/v1beta1",
        "kind": "ResourceFlavor",
        "metadata": {"name": name},
        "spec": {"nodeLabels": {"nvidia.com/gpu.product": product}},
    }


def _cluster_queue(
    name: str, quotas: dict[str, int], reserved: dict[str, int], *, usage_only: bool = False
) -> dict:
    flavors = [
        {
            "name": f,
            "resources": [
                {"name": "cpu", "nominalQuota": "64"},
                {"name": "nvidia.com/gpu", "nominalQuota": q},
            ],
        }
        for f, q in quotas.items()
    ]
    used = [
        {"name": f, "resources": [{"name": "nvidia.com/gpu", "total": str(n), "borrowed": "0"}]}
        for f, n in reserved.items()
    ]
    status = {"flavorsUsage": used} if usage_only else {"flavorsReservation": used, "flavorsUsage": used}
    return {
        "apiVersion": "kueue.x-k8s.io/v1beta1",
        "kind": "ClusterQueue",
        "metadata": {"name": name},
        "spec": {
            "cohort": "ml",
            "resourceGroups": [{"coveredResources": ["cpu", "nvidia.com/gpu"], "flavors": flavors}],
        },
        "status": status,
    }


@pytest.fixture
def kueue_cluster(kube_api: KubeApiStandIn) -> KubeApiStandIn:
    add = kube_api.add_object
    add("kueue.x-k8s.io", "v1beta1", "resourceflavors", _flavor("a100", A100))
    add("kueue.x-k8s.io", "v1beta1", "resourceflavors", _flavor("h100", H100))
    add(
        "kueue.x-k8s.io",
        "v1beta1",
        "clusterqueues",
        _cluster_queue("team-a", {"a100": 16, "h100": 8}, {"a100": 10}),
    )
    add("kueue.x-k8s.io", "v1beta1", "clusterqueues", _cluster_queue("team-b", {"a100": 8}, {"a100": 8}))
    # Over-reserved through borrowing: free never goes negative.
    add(
        "kueue.x-k8s.io",
        "v1beta1",
        "clusterqueues",
        _cluster_queue("team-c", {"h100": 4}, {"h100": 6}, usage_only=True),
    )
    return kube_api


def test_kueue_backend_by_flavor(kueue_cluster: KubeApiStandIn, conn_id: str):
    backend = load_backend({"type": "kueue", "kubernetes_conn_id": conn_id})
    assert isinstance(backend, KueueBackend)
    assert by_pool(backend.get_capacity()) == {"a100": (24, 6, A100), "h100": (12, 8, H100)}


def test_kueue_backend_per_queue_async(kueue_cluster: KubeApiStandIn, conn_id: str):
    backend = load_backend(
        {
            "type": "kueue",
            "kubernetes_conn_id": conn_id,
            "pool_by": "cluster_queue_flavor",
            "cluster_queues": ["team-a", "team-c"],
            "pool_names": {"team-a/a100": "perception-a100"},
        }
    )
    expected = {"perception-a100": (16, 6, A100), "team-a/h100": (8, 8, H100), "team-c/h100": (4, 0, H100)}
    assert by_pool(asyncio.run(backend.aget_capacity())) == expected
    assert by_pool(backend.get_capacity()) == expected


def test_kueue_backend_unknown_queue_is_an_error(kueue_cluster: KubeApiStandIn, conn_id: str):
    backend = load_backend({"type": "kueue", "kubernetes_conn_id": conn_id, "cluster_queues": ["team-z"]})
    with pytest.raises(CapacityError, match="team-z"):
        backend.get_capacity()


def test_backend_config_rejects_typos():
    with pytest.raises(Exception, match="pool_lable"):
        load_backend({"type": "kubernetes", "pool_lable": "x"})


class _NoConnections:
    """A resolver that fails the test if a back end without a connection id asks for one."""

    def __getattr__(self, name: str):
        raise AssertionError(f"resolver.{name} used for a back end configured without a connection")


def test_kubernetes_backend_reads_a_kubeconfig_without_airflow_connections(
    gpu_cluster: KubeApiStandIn, tmp_path, monkeypatch: pytest.MonkeyPatch
):
    from nuro_ml.clients import connections

    kubeconfig = gpu_cluster.write_kubeconfig(tmp_path / "plain-kubeconfig")
    monkeypatch.setattr(connections, "_resolver", _NoConnections())
    backend = load_backend(
        {
            "type": "kubernetes",
            "kubernetes_conn_id": None,
            "config_file": str(kubeconfig),
            "pool_names": {A100: "a100"},
        }
    )
    sync = by_pool(backend.get_capacity())
    assert sync == {"a100": (16, 7, A100), H100: (8, 0, H100)}
    assert by_pool(asyncio.run(backend.aget_capacity())) == sync


def test_kubernetes_api_errors_keep_their_status(gpu_cluster: KubeApiStandIn, tmp_path):
    kubeconfig = gpu_cluster.write_kubeconfig(tmp_path / "wrong-token", token="not-the-token")
    backend = load_backend({"type": "kubernetes", "kubernetes_conn_id": None, "config_file": str(kubeconfig)})
    with pytest.raises(CapacityError) as err:
        backend.get_capacity()
    assert err.value.status_code == 401
    with pytest.raises(CapacityError) as aerr:
        asyncio.run(backend.aget_capacity())
    assert aerr.value.status_code == 401
