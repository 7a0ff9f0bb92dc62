"""GPU-capacity back ends (Ray, Slurm, Kubernetes, Kueue, AWS, static)."""

from nuro_ml.capacity.backends.base import (
    BACKEND_CLASS_FOR_TYPE,
    CapacityBackend,
    CapacityBackendConfig,
    PoolCapacity,
    load_backend,
)

__all__ = [
    "BACKEND_CLASS_FOR_TYPE",
    "CapacityBackend",
    "CapacityBackendConfig",
    "PoolCapacity",
    "load_backend",
]
