"""Kubernetes back end: free GPUs per node pool from node allocatable minus pod requests.

A pool is the set of nodes sharing a value of ``pool_label`` (by default GPU Feature
Discovery's ``nvidia.com/gpu.product``). A node's free GPUs are its allocatable
``nvidia.com/gpu`` minus what the non-terminated pods bound to it request, counted the way
the scheduler does: per pod, the larger of the containers' sum and the largest init container.
Nodes that are not Ready or are cordoned cannot take new work and are left out.

Each node is reported too (its free whole GPUs, and in ``free_milli`` also its free MIG
devices of the mixed strategy, ``nvidia.com/mig-<g>g.<mem>gb``, each worth ``g``/7 of a GPU).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from pydantic import Field

from nuro_ml.capacity.backends.base import (
    CapacityBackend,
    CapacityBackendConfig,
    NodeCapacity,
    PoolCapacity,
)
from nuro_ml.clients.kubernetes import (
    AsyncKubernetesClient,
    KubeAccess,
    KubernetesClient,
    parse_quantity_value,
)
from nuro_ml.exceptions import CapacityError, KubernetesApiError

#: Pods in these phases hold no resources any more.
TERMINAL_POD_PHASES = ("Succeeded", "Failed")
ACTIVE_POD_SELECTOR = ",".join(f"status.phase!={phase}" for phase in TERMINAL_POD_PHASES)


class KubeConnectionConfig(CapacityBackendConfig):
    """How to reach the cluster: a Kubernetes connection (resolved by the engine clients'
    connection resolver: Airflow's under Airflow), optionally overridden."""

    kubernetes_conn_id: str | None = "kubernetes_default"
    """Airflow connection of type ``kubernetes`` (kubeconfig path/content or in-cluster)."""
    config_file: str | None = None
    """kubeconfig path, overriding the connection's."""
    cluster_context: str | None = None
    """kubeconfig context, overriding the connection's."""
    in_cluster: bool | None = None
    """Use the pod's service account, overriding the connection's."""
    gpu_resource: str = "nvidia.com/gpu"
    """Extended resource that counts as a GPU."""

    @property
    def access(self) -> KubeAccess:
        return KubeAccess(
            conn_id=self.kubernetes_conn_id,
            config_file=self.config_file,
            cluster_context=self.cluster_context,
            in_cluster=self.in_cluster,
        )


class KubernetesBackendConfig(KubeConnectionConfig):
    """``{"type": "kubernetes", "pool_label": "nvidia.com/gpu.product", "pool_names": {...}}``."""

    type: Literal["kubernetes"] = "kubernetes"
    pool_label: str = "nvidia.com/gpu.product"
    """Node label whose value groups nodes into pools (and names the GPU type)."""
    pool_names: dict[str, str] = Field(default_factory=dict)
    """Label value -> ledger pool name; values not listed are used as the pool name as they are."""
    default_pool: str | None = None
    """Pool for GPU nodes without ``pool_label``; None leaves them out."""
    node_selector: str | None = None
    """Label selector restricting which nodes count (e.g. ``node-role/gpu=true``)."""


@dataclass(frozen=True)
class _NodeView:
    name: str
    pool: str
    gpu_type: str | None
    allocatable: int
    #: MIG resource name -> allocatable devices.
    mig: Mapping[str, int]


MIG_PREFIX = "nvidia.com/mig-"
#: Compute slices of a MIG-capable GPU (A100/H100: 7).
MIG_SLICES = 7


def mig_milli(resource: str) -> int:
    """Milli-GPUs one device of MIG resource ``nvidia.com/mig-3g.40gb`` stands for (3/7 GPU)."""
    profile = resource[len(MIG_PREFIX) :]
    compute, _, _memory = profile.partition("g.")
    if not compute.isdigit():
        raise CapacityError(f"MIG resource {resource!r} does not name its compute slices (<n>g.<mem>gb)")
    return int(compute) * 1000 // MIG_SLICES


def quantity(value: Any) -> Decimal:
    """A Kubernetes quantity (``"4"``, ``2``, ``"500m"``) as a number."""
    try:
        return Decimal(parse_quantity_value(value))
    except (ValueError, TypeError) as err:
        raise CapacityError(f"not a Kubernetes quantity: {value!r}") from err


def _ready(node: Mapping[str, Any]) -> bool:
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return False


def _container_gpus(container: Mapping[str, Any], resource: str) -> Decimal:
    resources = container.get("resources") or {}
    requests = resources.get("requests") or {}
    limits = resources.get("limits") or {}
    # Extended resources cannot be overcommitted: a limit alone implies an equal request.
    value = requests.get(resource, limits.get(resource))
    return quantity(value) if value is not None else Decimal(0)


def pod_gpu_request(pod: Mapping[str, Any], resource: str) -> Decimal:
    """GPUs the scheduler reserves for a pod: max(sum of containers, largest init container) + overhead."""
    spec = pod.get("spec") or {}
    regular = sum((_container_gpus(c, resource) for c in spec.get("containers") or []), Decimal(0))
    init = max((_container_gpus(c, resource) for c in spec.get("initContainers") or []), default=Decimal(0))
    overhead = (spec.get("overhead") or {}).get(resource)
    return max(regular, init) + (quantity(overhead) if overhead is not None else Decimal(0))


def node_pools(
    nodes: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]], config: KubernetesBackendConfig
) -> list[PoolCapacity]:
    """Pool capacities from node and pod objects (as the API returns them)."""
    views: dict[str, _NodeView] = {}
    for node in nodes:
        metadata = node.get("metadata") or {}
        node_allocatable = (node.get("status") or {}).get("allocatable") or {}
        allocatable = node_allocatable.get(config.gpu_resource)
        mig = {
            name: int(quantity(value))
            for name, value in node_allocatable.items()
            if name.startswith(MIG_PREFIX) and quantity(value) > 0
        }
        if (allocatable is None or quantity(allocatable) <= 0) and not mig:
            continue
        if not _ready(node) or (node.get("spec") or {}).get("unschedulable"):
            continue
        label = (metadata.get("labels") or {}).get(config.pool_label)
        pool = config.pool_names.get(label, label) if label else config.default_pool
        if pool is None:
            continue
        whole = int(quantity(allocatable)) if allocatable is not None else 0
        views[metadata["name"]] = _NodeView(metadata["name"], pool, label, whole, mig)
    used: dict[tuple[str, str], Decimal] = {}
    for pod in pods:
        node_name = (pod.get("spec") or {}).get("nodeName")
        phase = (pod.get("status") or {}).get("phase")
        if node_name not in views or phase in TERMINAL_POD_PHASES:
            continue
        for resource in (config.gpu_resource, *views[node_name].mig):
            key = (node_name, resource)
            used[key] = used.get(key, Decimal(0)) + pod_gpu_request(pod, resource)
    totals: dict[str, list[int]] = {}
    types: dict[str, set[str]] = {}
    per_pool: dict[str, list[NodeCapacity]] = {}
    for view in views.values():
        free = max(0, view.allocatable - int(used.get((view.name, config.gpu_resource), Decimal(0))))
        free_milli = free * 1000
        for resource, devices in view.mig.items():
            left = max(0, devices - int(used.get((view.name, resource), Decimal(0))))
            free_milli += left * mig_milli(resource)
        entry = totals.setdefault(view.pool, [0, 0])
        entry[0] += view.allocatable
        entry[1] += free
        if view.gpu_type:
            types.setdefault(view.pool, set()).add(view.gpu_type)
        per_pool.setdefault(view.pool, []).append(
            NodeCapacity(view.name, view.allocatable, free, view.gpu_type, view.name, free_milli)
        )
    return [
        PoolCapacity(
            pool=pool,
            total_gpus=total,
            free_gpus=free,
            gpu_type=next(iter(types[pool])) if len(types.get(pool, ())) == 1 else None,
            source="kubernetes",
            nodes=tuple(sorted(per_pool.get(pool, ()), key=lambda n: n.name)),
        )
        for pool, (total, free) in sorted(totals.items())
    ]


class KubernetesBackend(CapacityBackend):
    """Free GPUs per node pool, read from the Kubernetes API (nodes and pods)."""

    config_class = KubernetesBackendConfig
    config: KubernetesBackendConfig

    def get_capacity(self) -> list[PoolCapacity]:
        client = KubernetesClient.connect(self.config.access)
        try:
            nodes = client.list_nodes(label_selector=self.config.node_selector or "")
            pods = client.list_pods(field_selector=ACTIVE_POD_SELECTOR)
        except KubernetesApiError as err:
            raise CapacityError(f"kubernetes backend: {err}", status_code=err.status_code) from err
        return node_pools(nodes, pods, self.config)

    async def aget_capacity(self) -> list[PoolCapacity]:
        try:
            async with AsyncKubernetesClient.connect(self.config.access) as client:
                nodes = await client.list_nodes(label_selector=self.config.node_selector or "")
                pods = await client.list_pods(field_selector=ACTIVE_POD_SELECTOR)
        except KubernetesApiError as err:
            raise CapacityError(f"kubernetes backend: {err}", status_code=err.status_code) from err
        return node_pools(nodes, pods, self.config)
