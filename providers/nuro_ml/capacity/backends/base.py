"""The small interface every GPU-capacity back end implements.

Modelled on Feast's pluggable online stores: one abstract method that reads capacity,
a pydantic config per back end with a ``type`` discriminator and ``extra="forbid"`` (so a
typo in a pipeline spec fails loudly), and a short-name map plus dotted-path plug-ins.
"""

from __future__ import annotations

import asyncio
import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from nuro_ml.exceptions import CapacityError


@dataclass(frozen=True)
class NodeCapacity:
    """One node as a back end sees it: its GPUs and how many of them nothing holds."""

    name: str
    total_gpus: int
    #: Whole GPUs free on the node (a GPU partly used counts as not free).
    free_gpus: int
    gpu_type: str | None = None
    #: Back-end specific address of the node for pinning (Ray node id, Kubernetes node
    #: name, Slurm node name); defaults to ``name``.
    ref: str | None = None
    #: Milli-GPUs free including GPU slices (Kubernetes MIG devices); None: ``free_gpus``.
    free_milli: int | None = None

    def __post_init__(self) -> None:
        if self.total_gpus < 0 or not 0 <= self.free_gpus <= self.total_gpus:
            raise CapacityError(
                f"node {self.name!r}: free GPUs must be between 0 and its {self.total_gpus}, "
                f"got {self.free_gpus}"
            )


@dataclass(frozen=True)
class PoolCapacity:
    """What a back end reports for one pool of interchangeable GPUs."""

    #: Pool name as the ledger knows it (e.g. ``local``, ``a100-spot``).
    pool: str
    #: GPUs the pool has in total (allocatable), whether used or not.
    total_gpus: int
    #: GPUs not allocated to anything right now, as the back end sees it.
    free_gpus: int
    #: GPU model, when the back end knows it (``A100``, ``H100``...).
    gpu_type: str | None = None
    #: Which back end produced the figure, for logs and the capacity page.
    source: str = ""
    observed_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: Per-node figures where the back end knows them (empty: only pool totals).
    nodes: tuple[NodeCapacity, ...] = ()

    def __post_init__(self) -> None:
        if self.total_gpus < 0 or self.free_gpus < 0:
            raise CapacityError(
                f"pool {self.pool!r}: negative GPU count reported by {self.source or 'backend'}"
            )


class CapacityBackendConfig(BaseModel):
    """Base of every back end's config: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str


class CapacityBackend(ABC):
    """Reports free GPU capacity per pool. Implementations must be cheap to construct."""

    config_class: ClassVar[type[CapacityBackendConfig]]

    def __init__(self, config: CapacityBackendConfig) -> None:
        if not isinstance(config, self.config_class):
            raise CapacityError(
                f"{self.__class__.__name__} needs a {self.config_class.__name__}, got {type(config).__name__}"
            )
        self.config = config

    @abstractmethod
    def get_capacity(self) -> list[PoolCapacity]:
        """Return the current capacity of every pool this back end knows (blocking call)."""

    async def aget_capacity(self) -> list[PoolCapacity]:
        """Async twin used by triggers; back ends with a native async client override it."""
        return await asyncio.to_thread(self.get_capacity)

    def poll_key(self) -> str:
        """Identity of the remote system polled: triggers sharing a key share one poller."""
        return self.config.model_dump_json()


#: Short names accepted in ``backend={"type": ...}``; a full dotted class path also works.
BACKEND_CLASS_FOR_TYPE: dict[str, str] = {
    "static": "nuro_ml.capacity.backends.static.StaticBackend",
    "ray": "nuro_ml.capacity.backends.ray.RayBackend",
    "slurm": "nuro_ml.capacity.backends.slurm.SlurmBackend",
    "kubernetes": "nuro_ml.capacity.backends.kubernetes.KubernetesBackend",
    "kueue": "nuro_ml.capacity.backends.kueue.KueueBackend",
    "aws": "nuro_ml.capacity.backends.aws.AwsBackend",
}


def _import_class(path: str) -> type[Any]:
    module_name, _, class_name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), class_name)  # type: ignore[no-any-return]
    except (ImportError, AttributeError) as err:
        raise CapacityError(f"capacity backend class {path!r} cannot be imported: {err}") from err


def load_backend(config: dict[str, Any] | CapacityBackendConfig) -> CapacityBackend:
    """Build a back end from its config dict (``{"type": "ray", ...}``) or config object."""
    if isinstance(config, CapacityBackendConfig):
        raw: dict[str, Any] = config.model_dump()
    else:
        raw = dict(config)
    backend_type = raw.get("type")
    if not backend_type:
        raise CapacityError(
            f"capacity backend config needs a 'type' (one of {sorted(BACKEND_CLASS_FOR_TYPE)})"
        )
    class_path = BACKEND_CLASS_FOR_TYPE.get(backend_type, backend_type)
    if "." not in class_path or not class_path.endswith("Backend"):
        raise CapacityError(
            f"unknown capacity backend type {backend_type!r}: use one of {sorted(BACKEND_CLASS_FOR_TYPE)} "
            "or a dotted path to a class ending in 'Backend'"
        )
    backend_cls = _import_class(class_path)
    config_obj = backend_cls.config_class.model_validate(raw)
    return backend_cls(config_obj)  # type: ignore[no-any-return]
