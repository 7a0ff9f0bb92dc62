"""Static back end: pools listed in configuration, for clusters the platform cannot query."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nuro_ml.capacity.backends.base import (
    CapacityBackend,
    CapacityBackendConfig,
    NodeCapacity,
    PoolCapacity,
)


class StaticNodeConfig(BaseModel):
    """One declared node: its GPUs (count, model), CPU and memory; all GPUs free by default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    gpus: int = Field(ge=0)
    gpu_type: str | None = None
    free_gpus: int | None = Field(default=None, ge=0)
    cpu_milli: int = Field(default=0, ge=0)
    memory_mib: int = Field(default=0, ge=0)


class StaticPoolConfig(BaseModel):
    """One pool: ``free_gpus`` defaults to all of them (the ledger then does the accounting)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    #: GPUs of the pool; with ``nodes`` declared, their sum (may then be left out).
    total_gpus: int | None = Field(default=None, ge=0)
    free_gpus: int | None = Field(default=None, ge=0)
    gpu_type: str | None = None
    nodes: tuple[StaticNodeConfig, ...] = ()

    @model_validator(mode="after")
    def _free_within_total(self) -> StaticPoolConfig:
        node_gpus = sum(n.gpus for n in self.nodes)
        if self.total_gpus is None:
            if not self.nodes:
                raise ValueError(f"pool {self.name!r}: give total_gpus or its nodes")
            object.__setattr__(self, "total_gpus", node_gpus)
        elif self.nodes and self.total_gpus != node_gpus:
            raise ValueError(
                f"pool {self.name!r}: total_gpus ({self.total_gpus}) differs from its nodes' GPUs "
                f"({node_gpus})"
            )
        for node in self.nodes:
            if node.free_gpus is not None and node.free_gpus > node.gpus:
                raise ValueError(
                    f"pool {self.name!r} node {node.name!r}: free_gpus ({node.free_gpus}) exceeds "
                    f"gpus ({node.gpus})"
                )
        if self.free_gpus is not None and self.free_gpus > (self.total_gpus or 0):
            raise ValueError(
                f"pool {self.name!r}: free_gpus ({self.free_gpus}) exceeds total_gpus ({self.total_gpus})"
            )
        return self


class StaticBackendConfig(CapacityBackendConfig):
    """``{"type": "static", "pools": [{"name": "local", "total_gpus": 4}]}``."""

    type: Literal["static"] = "static"
    pools: tuple[StaticPoolConfig, ...] = Field(min_length=1)


class StaticBackend(CapacityBackend):
    """Reports the configured pools as they are; no remote call."""

    config_class = StaticBackendConfig
    config: StaticBackendConfig

    def get_capacity(self) -> list[PoolCapacity]:
        out = []
        for pool in self.config.pools:
            total = int(pool.total_gpus or 0)
            nodes = tuple(
                NodeCapacity(
                    name=n.name,
                    total_gpus=n.gpus,
                    free_gpus=n.gpus if n.free_gpus is None else n.free_gpus,
                    gpu_type=n.gpu_type or pool.gpu_type,
                )
                for n in pool.nodes
            )
            free = pool.free_gpus
            if free is None:
                free = sum(n.free_gpus for n in nodes) if nodes else total
            out.append(
                PoolCapacity(
                    pool=pool.name,
                    total_gpus=total,
                    free_gpus=free,
                    gpu_type=pool.gpu_type,
                    source="static",
                    nodes=nodes,
                )
            )
        return out
