"""Static back end: pools listed in configuration, for clusters the platform cannot query."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nuro_ml.capacity.backends.base import CapacityBackend, CapacityBackendConfig, PoolCapacity


class StaticPoolConfig(BaseModel):
    """One pool: ``free_gpus`` defaults to all of them (the ledger then does the accounting)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    total_gpus: int = Field(ge=0)
    free_gpus: int | None = Field(default=None, ge=0)
    gpu_type: str | None = None

    @model_validator(mode="after")
    def _free_within_total(self) -> StaticPoolConfig:
        if self.free_gpus is not None and self.free_gpus > self.total_gpus:
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
        return [
            PoolCapacity(
                pool=pool.name,
                total_gpus=pool.total_gpus,
                free_gpus=pool.total_gpus if pool.free_gpus is None else pool.free_gpus,
                gpu_type=pool.gpu_type,
                source="static",
            )
            for pool in self.config.pools
        ]
