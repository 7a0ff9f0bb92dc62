"""Ray back end: total and available GPUs of a running Ray cluster, without ``ray.init``.

Two ways in, chosen by the form of ``address``:

* a dashboard URL (``http://127.0.0.1:8265``): one HTTP GET of ``/api/cluster_status``,
  whose load-metrics report carries ``[used, total]`` per resource. Cheapest for a
  triggerer (no Ray import); the figures trail the cluster by the autoscaler monitor's
  update period (a few seconds).
* a GCS address (``127.0.0.1:6379``): the autoscaler v2 SDK's ``get_cluster_status`` asks
  the GCS directly over gRPC; current to the moment, but imports Ray (about 3 s, once).

Neither connects a driver to the cluster, so the triggerer never becomes a Ray worker.

Per-node figures (each alive node's ``resource`` total and free, named by Ray node id) come
from the GCS path; the dashboard path reports the pool totals only.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from pydantic import Field, field_validator

from nuro_ml.capacity.backends.base import (
    CapacityBackend,
    CapacityBackendConfig,
    NodeCapacity,
    PoolCapacity,
)
from nuro_ml.clients.ray import cluster_resource_usage, gcs_cluster_status


class RayBackendConfig(CapacityBackendConfig):
    """``{"type": "ray", "address": "http://127.0.0.1:8265"}`` (dashboard) or ``"127.0.0.1:6379"`` (GCS)."""

    type: Literal["ray"] = "ray"
    address: str = Field(min_length=1)
    #: Ledger pool the cluster's GPUs belong to.
    pool: str = "local"
    #: Ray resource counted as GPUs (custom resources such as ``A100`` work too).
    resource: str = "GPU"
    gpu_type: str | None = None
    timeout_seconds: float = Field(default=10.0, gt=0)

    @field_validator("address")
    @classmethod
    def _no_client_address(cls, value: str) -> str:
        if value.startswith("ray://"):
            raise ValueError(
                f"{value!r} is a Ray Client address; give the dashboard URL (http://host:8265) "
                "or the GCS address (host:port) instead"
            )
        return value.rstrip("/")

    @property
    def uses_dashboard(self) -> bool:
        return self.address.startswith(("http://", "https://"))


class RayBackend(CapacityBackend):
    """GPU capacity of one Ray cluster, reported as one pool."""

    config_class = RayBackendConfig
    config: RayBackendConfig

    def get_capacity(self) -> list[PoolCapacity]:
        nodes: tuple[NodeCapacity, ...] = ()
        if self.config.uses_dashboard:
            used, total = self._from_dashboard()
            source = f"ray dashboard {self.config.address}"
        else:
            used, total, nodes = self._from_gcs()
            source = f"ray gcs {self.config.address}"
        total_gpus = int(total)
        free_gpus = max(0, int(total - used))
        return [
            PoolCapacity(
                pool=self.config.pool,
                total_gpus=total_gpus,
                free_gpus=min(free_gpus, total_gpus),
                gpu_type=self.config.gpu_type,
                source=source,
                nodes=nodes,
            )
        ]

    async def aget_capacity(self) -> list[PoolCapacity]:
        return await asyncio.to_thread(self.get_capacity)

    def _from_dashboard(self) -> tuple[float, float]:
        return cluster_resource_usage(
            self.config.address, self.config.resource, timeout=self.config.timeout_seconds
        )

    def _from_gcs(self) -> tuple[float, float, tuple[NodeCapacity, ...]]:
        status = gcs_cluster_status(self.config.address, timeout=self.config.timeout_seconds)
        total = float(status.total_resources().get(self.config.resource, 0.0))
        available = float(status.available_resources().get(self.config.resource, 0.0))
        nodes = []
        for node in [*status.active_nodes, *status.idle_nodes]:
            usage = {u.resource_name: u for u in (node.resource_usage.usage if node.resource_usage else [])}
            gpu = usage.get(self.config.resource)
            if gpu is None or gpu.total <= 0 or not node.node_id:
                continue
            node_total = int(gpu.total)
            nodes.append(
                NodeCapacity(
                    name=node.node_id,
                    total_gpus=node_total,
                    free_gpus=min(node_total, max(0, int(gpu.total - gpu.used))),
                    gpu_type=self.config.gpu_type,
                    ref=node.node_id,
                    free_milli=max(0, round((gpu.total - gpu.used) * 1000)),
                )
            )
        return total - available, total, tuple(sorted(nodes, key=lambda n: n.name))
