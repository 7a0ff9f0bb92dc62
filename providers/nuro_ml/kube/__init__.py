"""Kubernetes support: shipped CRDs, schema validation, typed RayJob specs and status."""

from nuro_ml.kube.manifest import validate_rayjob_manifest
from nuro_ml.kube.rayjob import (
    DEFAULT_GPU_TYPES,
    GpuScheduling,
    HeadGroup,
    RayJobSpec,
    Toleration,
    WorkerGroup,
)
from nuro_ml.kube.status import JobDeploymentStatus, RayJobInfo, RayJobStatus

__all__ = [
    "DEFAULT_GPU_TYPES",
    "GpuScheduling",
    "HeadGroup",
    "JobDeploymentStatus",
    "RayJobInfo",
    "RayJobSpec",
    "RayJobStatus",
    "Toleration",
    "WorkerGroup",
    "validate_rayjob_manifest",
]
