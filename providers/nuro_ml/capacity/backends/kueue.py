"""Kueue back end: unreserved GPU quota per ClusterQueue flavor.

For each ClusterQueue (``kueue.x-k8s.io/v1beta1``) and each flavor in a resource group that
covers the GPU resource, free = ``nominalQuota`` minus what admitted workloads reserve
(``status.flavorsReservation``; ``status.flavorsUsage`` on Kueue versions without it). Quota a
queue could borrow from its cohort is not counted: it is not guaranteed. The GPU model comes
from the ResourceFlavor's ``nodeLabels`` when it can be read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, Literal

from pydantic import Field

from nuro_ml.capacity.backends.base import CapacityBackend, PoolCapacity
from nuro_ml.capacity.backends.kubernetes import KubeConnectionConfig, quantity
from nuro_ml.clients.kubernetes import AsyncKubernetesClient, KubernetesClient
from nuro_ml.exceptions import CapacityError, KubernetesApiError
from nuro_ml.kube.crds import KUEUE_GROUP, KUEUE_VERSION


class KueueBackendConfig(KubeConnectionConfig):
    """``{"type": "kueue", "cluster_queues": ["team-a"], "pool_by": "flavor"}``."""

    type: Literal["kueue"] = "kueue"
    cluster_queues: tuple[str, ...] | None = None
    """ClusterQueues to report; None reports every ClusterQueue."""
    pool_by: Literal["flavor", "cluster_queue", "cluster_queue_flavor"] = "flavor"
    """Pool key: the flavor (summed over queues), the queue, or ``<queue>/<flavor>``."""
    pool_names: dict[str, str] = Field(default_factory=dict)
    """Pool key -> ledger pool name; keys not listed are used as they are."""
    gpu_type_label: str = "nvidia.com/gpu.product"
    """ResourceFlavor ``nodeLabels`` key naming the GPU model."""


def _usage(entries: Iterable[Mapping[str, Any]], resource: str) -> dict[str, Decimal]:
    found: dict[str, Decimal] = {}
    for flavor in entries:
        for item in flavor.get("resources") or []:
            if item.get("name") == resource and item.get("total") is not None:
                found[flavor["name"]] = quantity(item["total"])
    return found


def queue_pools(
    cluster_queues: Iterable[Mapping[str, Any]],
    flavors: Iterable[Mapping[str, Any]],
    config: KueueBackendConfig,
) -> list[PoolCapacity]:
    """Pool capacities from ClusterQueue and ResourceFlavor objects (as the API returns them)."""
    gpu_types = {
        (f.get("metadata") or {}).get("name"): ((f.get("spec") or {}).get("nodeLabels") or {}).get(
            config.gpu_type_label
        )
        for f in flavors
    }
    wanted = set(config.cluster_queues) if config.cluster_queues is not None else None
    totals: dict[str, list[Decimal]] = {}
    types: dict[str, set[str]] = {}
    seen: set[str] = set()
    for queue in cluster_queues:
        name = (queue.get("metadata") or {}).get("name", "")
        if wanted is not None and name not in wanted:
            continue
        seen.add(name)
        status = queue.get("status") or {}
        reserved = _usage(status.get("flavorsReservation") or [], config.gpu_resource)
        if "flavorsReservation" not in status:
            reserved = _usage(status.get("flavorsUsage") or [], config.gpu_resource)
        for group in (queue.get("spec") or {}).get("resourceGroups") or []:
            if config.gpu_resource not in (group.get("coveredResources") or []):
                continue
            for flavor in group.get("flavors") or []:
                nominal = next(
                    (
                        quantity(r["nominalQuota"])
                        for r in flavor.get("resources") or []
                        if r.get("name") == config.gpu_resource
                    ),
                    Decimal(0),
                )
                key = {"flavor": flavor["name"], "cluster_queue": name}.get(
                    config.pool_by, f"{name}/{flavor['name']}"
                )
                pool = config.pool_names.get(key, key)
                entry = totals.setdefault(pool, [Decimal(0), Decimal(0)])
                entry[0] += nominal
                entry[1] += max(Decimal(0), nominal - reserved.get(flavor["name"], Decimal(0)))
                if gpu_types.get(flavor["name"]):
                    types.setdefault(pool, set()).add(str(gpu_types[flavor["name"]]))
    if wanted is not None and wanted - seen:
        raise CapacityError(f"kueue backend: ClusterQueue(s) not found: {', '.join(sorted(wanted - seen))}")
    return [
        PoolCapacity(
            pool=pool,
            total_gpus=int(total),
            free_gpus=int(free),
            gpu_type=next(iter(types[pool])) if len(types.get(pool, ())) == 1 else None,
            source="kueue",
        )
        for pool, (total, free) in sorted(totals.items())
    ]


class KueueBackend(CapacityBackend):
    """Free GPU quota per Kueue ClusterQueue flavor, read from the Kubernetes API."""

    config_class = KueueBackendConfig
    config: KueueBackendConfig

    def get_capacity(self) -> list[PoolCapacity]:
        client = KubernetesClient.connect(self.config.access)
        try:
            queues = client.list_cluster_custom_objects(KUEUE_GROUP, KUEUE_VERSION, "clusterqueues")
        except KubernetesApiError as err:
            raise CapacityError(f"kueue backend: {err}", status_code=err.status_code) from err
        try:
            flavors = client.list_cluster_custom_objects(KUEUE_GROUP, KUEUE_VERSION, "resourceflavors")
        except KubernetesApiError:
            # GPU model names are a nicety: without read access to flavors, report capacity anyway.
            flavors = []
        return queue_pools(queues, flavors, self.config)

    async def aget_capacity(self) -> list[PoolCapacity]:
        async with AsyncKubernetesClient.connect(self.config.access) as client:
            try:
                queues = await client.list_cluster_custom_objects(KUEUE_GROUP, KUEUE_VERSION, "clusterqueues")
            except KubernetesApiError as err:
                raise CapacityError(f"kueue backend: {err}", status_code=err.status_code) from err
            try:
                flavors = await client.list_cluster_custom_objects(
                    KUEUE_GROUP, KUEUE_VERSION, "resourceflavors"
                )
            except KubernetesApiError:
                flavors = []
        return queue_pools(queues, flavors, self.config)
