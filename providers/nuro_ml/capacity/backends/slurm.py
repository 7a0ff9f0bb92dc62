"""Capacity back end reading free GPUs per partition from a real slurmctld.

Slurm 22.05 without slurmdbd does not track ``gres/gpu`` as a TRES, so usage comes from each
node's ``Gres`` (configured) and ``GresUsed`` (allocated) as ``sinfo`` reports them. Each
partition is one pool. Only nodes that accept jobs count; a node with no idle CPU offers no
free GPU either, since no job could start on it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from nuro_ml.capacity.backends.base import CapacityBackend, CapacityBackendConfig, NodeCapacity, PoolCapacity
from nuro_ml.clients import connections
from nuro_ml.exceptions import CapacityError
from nuro_ml.slurm.client import AsyncSlurmClient, SlurmClient
from nuro_ml.slurm.connection import SlurmClusterSettings, merge_settings
from nuro_ml.slurm.models import SlurmNodeGres


class SlurmBackendConfig(CapacityBackendConfig):
    """Which Slurm cluster to read and how partitions map to pools."""

    type: Literal["slurm"] = "slurm"
    #: Connection of type ``slurm`` (under Airflow an Airflow connection); None uses ``slurm_conf``
    #: or the local client config.
    conn_id: str | None = None
    #: slurm.conf of the cluster, overriding the connection's.
    slurm_conf: str | None = None
    #: Partitions to report; None means every partition sinfo shows.
    partitions: tuple[str, ...] | None = None
    #: Pool name per partition when they differ (``{"gpu": "a100-onprem"}``).
    pool_for_partition: dict[str, str] = {}
    #: GRES name counted as GPUs.
    gres_name: str = "gpu"
    #: Seconds one Slurm command or slurmrestd request may take.
    timeout_seconds: float = 60.0
    #: Count only this GRES type (``gpu:a100:4``); None counts every type.
    gpu_type: str | None = None


class SlurmBackend(CapacityBackend):
    """Free and total GPUs of each Slurm partition, from ``sinfo`` node GRES."""

    config_class = SlurmBackendConfig
    config: SlurmBackendConfig

    def get_capacity(self) -> list[PoolCapacity]:
        try:
            conn = connections.resolver().connection(self.config.conn_id) if self.config.conn_id else None
            nodes = SlurmClient(self._settings(conn), timeout=self.config.timeout_seconds).get_nodes()
        except Exception as err:
            raise CapacityError(f"slurm backend: reading nodes with sinfo failed: {err}") from err
        return self.pools_from_nodes(nodes)

    async def aget_capacity(self) -> list[PoolCapacity]:
        try:
            conn = (
                await connections.resolver().aconnection(self.config.conn_id) if self.config.conn_id else None
            )
            nodes = await AsyncSlurmClient(
                self._settings(conn), timeout=self.config.timeout_seconds
            ).get_nodes()
        except Exception as err:
            raise CapacityError(f"slurm backend: reading nodes with sinfo failed: {err}") from err
        return self.pools_from_nodes(nodes)

    def _settings(self, conn: connections.ConnectionFields | None) -> SlurmClusterSettings:
        return merge_settings(conn, conn_id=self.config.conn_id, slurm_conf=self.config.slurm_conf)

    def pools_from_nodes(self, nodes: Iterable[SlurmNodeGres]) -> list[PoolCapacity]:
        """One :class:`PoolCapacity` per partition from ``sinfo`` node rows."""
        cfg = self.config
        by_partition: dict[str, list[SlurmNodeGres]] = {}
        for node in nodes:
            by_partition.setdefault(node.partition, []).append(node)
        wanted = list(cfg.partitions) if cfg.partitions is not None else list(by_partition)
        missing = [p for p in wanted if p not in by_partition]
        if missing:
            raise CapacityError(
                f"slurm backend: partition(s) {', '.join(missing)} not found; sinfo shows "
                f"{', '.join(sorted(by_partition)) or 'none'}"
            )
        pools = []
        for partition in wanted:
            total = free = 0
            types: set[str | None] = set()
            per_node: list[NodeCapacity] = []
            for node in by_partition[partition]:
                if not node.accepts_jobs:
                    continue
                node_total = node.count(cfg.gres_name, cfg.gpu_type)
                node_used = node.count(cfg.gres_name, cfg.gpu_type, used=True)
                total += node_total
                node_free = max(0, node_total - node_used) if node.cpus_idle != 0 else 0
                free += node_free
                node_types = {t for (g, t), n in node.gres.items() if g == cfg.gres_name and n > 0}
                types.update(node_types)
                per_node.append(
                    NodeCapacity(
                        name=node.node,
                        total_gpus=node_total,
                        free_gpus=min(node_free, node_total),
                        gpu_type=cfg.gpu_type or (next(iter(node_types)) if len(node_types) == 1 else None),
                    )
                )
            gpu_type = cfg.gpu_type or (next(iter(types)) if len(types) == 1 else None)
            pools.append(
                PoolCapacity(
                    pool=cfg.pool_for_partition.get(partition, partition),
                    total_gpus=total,
                    free_gpus=free,
                    gpu_type=gpu_type,
                    source=f"slurm:{partition}",
                    nodes=tuple(per_node),
                )
            )
        return pools
