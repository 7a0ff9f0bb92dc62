"""Typed RayJob spec: what a training task asks for, turned into a ``ray.io/v1`` RayJob manifest.

The model covers the fields our pipelines set (entrypoint, runtime env, head and worker
groups with CPU/memory/GPU, GPU-type scheduling, lifecycle and Kueue queueing). Anything
else can be merged into the pod spec or container through ``pod_overrides`` /
``container_overrides``; :meth:`RayJobSpec.to_manifest` validates the result against the
KubeRay CRD, so an override typo is reported with its field path before any API call.
"""

from __future__ import annotations

import copy
from importlib.metadata import PackageNotFoundError, version
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nuro_ml.kube.crds import KUEUE_PRIORITY_LABEL, KUEUE_QUEUE_LABEL, RAY_GROUP, RAY_VERSION, RAYJOB_KIND
from nuro_ml.kube.manifest import validate_rayjob_manifest

#: Extended resource name the NVIDIA device plugin advertises.
GPU_RESOURCE = "nvidia.com/gpu"
#: Node label GPU Feature Discovery sets to the GPU model.
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"

HEAD_CONTAINER = "ray-head"
WORKER_CONTAINER = "ray-worker"


def _ray_version() -> str:
    try:
        return version("ray")
    except PackageNotFoundError:  # pragma: no cover - ray is a dependency of the provider
        return "2.40.0"


class Toleration(BaseModel):
    """A pod toleration (``core/v1 Toleration``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None

    def to_k8s(self) -> dict[str, Any]:
        out: dict[str, Any] = {"operator": self.operator}
        if self.key is not None:
            out["key"] = self.key
        if self.value is not None:
            out["value"] = self.value
        if self.effect is not None:
            out["effect"] = self.effect
        if self.toleration_seconds is not None:
            out["tolerationSeconds"] = self.toleration_seconds
        return out


#: GPU nodes are commonly tainted so only pods asking for GPUs land there.
GPU_TOLERATION = Toleration(key=GPU_RESOURCE, operator="Exists", effect="NoSchedule")


class GpuScheduling(BaseModel):
    """Where pods of one GPU type may run: node selector plus tolerations."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=lambda: [GPU_TOLERATION])


def _product(label_value: str) -> GpuScheduling:
    return GpuScheduling(node_selector={GPU_PRODUCT_LABEL: label_value})


#: GPU type name -> scheduling, keyed by the names pipelines use; values are GPU Feature Discovery
#: ``nvidia.com/gpu.product`` labels. Override or extend through ``RayJobSpec.gpu_types``.
DEFAULT_GPU_TYPES: dict[str, GpuScheduling] = {
    "A100": _product("NVIDIA-A100-SXM4-80GB"),
    "A100-40GB": _product("NVIDIA-A100-SXM4-40GB"),
    "H100": _product("NVIDIA-H100-80GB-HBM3"),
    "L4": _product("NVIDIA-L4"),
    "A10G": _product("NVIDIA-A10G"),
    "T4": _product("Tesla-T4"),
}


def _quantity(value: Any) -> str:
    # The CRD types quantities as int-or-string: a float such as 0.5 would be rejected.
    if isinstance(value, bool):
        raise ValueError("a resource quantity cannot be a boolean")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{int(value * 1000)}m" if not value.is_integer() else str(int(value))
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise ValueError(f"not a resource quantity: {value!r}")


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


class GroupSpec(BaseModel):
    """Resources and placement shared by the head and worker groups."""

    model_config = ConfigDict(extra="forbid")

    #: CPU request and limit, as a Kubernetes quantity (``"4"``, ``"500m"``; numbers are converted).
    cpu: str = "2"
    #: Memory request and limit (``"8Gi"``).
    memory: str = "8Gi"
    #: ``nvidia.com/gpu`` per pod (requests equal limits for extended resources).
    gpus: int = Field(default=0, ge=0)
    #: Key into ``RayJobSpec.gpu_types`` choosing node selector and tolerations; needs ``gpus > 0``.
    gpu_type: str | None = None
    #: Container image; defaults to ``RayJobSpec.image``.
    image: str | None = None
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    ray_start_params: dict[str, str] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    #: Labels for the group's pods.
    pod_labels: dict[str, str] = Field(default_factory=dict)
    #: Merged into the pod ``spec`` as is (validated against the CRD when the manifest is built).
    pod_overrides: dict[str, Any] = Field(default_factory=dict)
    #: Merged into the Ray container as is (validated against the CRD when the manifest is built).
    container_overrides: dict[str, Any] = Field(default_factory=dict)

    @field_validator("cpu", "memory", mode="before")
    @classmethod
    def _as_quantity(cls, value: Any) -> str:
        return _quantity(value)

    @model_validator(mode="after")
    def _gpu_type_needs_gpus(self) -> GroupSpec:
        if self.gpu_type and self.gpus == 0:
            raise ValueError(f"gpu_type {self.gpu_type!r} is set but gpus is 0")
        return self


class HeadGroup(GroupSpec):
    """The Ray head pod. By default it runs no GPU work (``num-gpus: 0`` unless it has GPUs)."""


class WorkerGroup(GroupSpec):
    """One worker group: ``replicas`` pods of the same shape."""

    #: ``groupName``, unique within the job.
    name: str
    replicas: int = 1
    #: Default to ``replicas`` (fixed-size cluster, as Kueue requires).
    min_replicas: int | None = None
    max_replicas: int | None = None


class RayJobSpec(BaseModel):
    """A RayJob as pipelines describe it; :meth:`to_manifest` renders the ``ray.io/v1`` object."""

    model_config = ConfigDict(extra="forbid")

    #: Rendered by Airflow when the spec is an operator's templated field.
    template_fields: ClassVar[tuple[str, ...]] = (
        "entrypoint",
        "runtime_env",
        "runtime_env_yaml",
        "job_metadata",
        "labels",
        "annotations",
        "queue_name",
    )

    #: Shell command KubeRay submits, e.g. ``python workloads/train_xgb.py --epochs 3``.
    entrypoint: str = Field(min_length=1)
    #: Ray image for every pod unless a group overrides it.
    image: str = Field(default_factory=lambda: f"rayproject/ray:{_ray_version()}")
    ray_version: str = Field(default_factory=_ray_version)
    #: Runtime environment as a mapping; rendered to ``runtimeEnvYAML``.
    runtime_env: dict[str, Any] | None = None
    #: Runtime environment given directly as YAML text (exclusive with ``runtime_env``).
    runtime_env_yaml: str | None = None
    head: HeadGroup = Field(default_factory=HeadGroup)
    workers: list[WorkerGroup] = Field(default_factory=list)
    #: Delete the RayCluster when the job finishes (required for Kueue and suspend).
    shutdown_after_job_finishes: bool = True
    ttl_seconds_after_finished: int = 0
    #: KubeRay fails the job with reason ``DeadlineExceeded`` once it has been active this long.
    active_deadline_seconds: int | None = None
    backoff_limit: int | None = None
    submission_mode: Literal["K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"] = "K8sJobMode"
    entrypoint_num_cpus: float | None = None
    entrypoint_num_gpus: float | None = None
    #: Kueue LocalQueue: sets the ``kueue.x-k8s.io/queue-name`` label and creates the job suspended.
    queue_name: str | None = None
    #: Kueue WorkloadPriorityClass (``kueue.x-k8s.io/priority-class`` label).
    priority_class: str | None = None
    #: Scheduling per GPU type; ``gpu_type`` in a group picks one of these.
    gpu_types: dict[str, GpuScheduling] = Field(default_factory=lambda: dict(DEFAULT_GPU_TYPES))
    #: Labels and annotations on the RayJob object.
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    #: ``spec.metadata``: stored with the Ray job.
    job_metadata: dict[str, str] = Field(default_factory=dict)
    service_account_name: str | None = None

    @model_validator(mode="after")
    def _check(self) -> RayJobSpec:
        if self.runtime_env is not None and self.runtime_env_yaml is not None:
            raise ValueError("set runtime_env or runtime_env_yaml, not both")
        for where, group in [
            ("head", self.head),
            *((f"workers[{i}]", w) for i, w in enumerate(self.workers)),
        ]:
            if group.gpu_type and group.gpu_type not in self.gpu_types:
                raise ValueError(
                    f"{where}.gpu_type {group.gpu_type!r} is not a known GPU type "
                    f"(known: {', '.join(sorted(self.gpu_types))})"
                )
        return self

    @property
    def total_gpus(self) -> int:
        """GPUs the whole cluster holds: what a capacity lease must cover."""
        return self.head.gpus + sum(w.gpus * w.replicas for w in self.workers)

    def _runtime_env_yaml(self) -> str | None:
        if self.runtime_env_yaml is not None:
            return self.runtime_env_yaml
        if self.runtime_env is not None:
            return yaml.safe_dump(self.runtime_env, sort_keys=True)
        return None

    def _pod_template(
        self, group: GroupSpec, container_name: str, extra_labels: dict[str, str]
    ) -> dict[str, Any]:
        resources: dict[str, Any] = {"cpu": group.cpu, "memory": group.memory}
        if group.gpus:
            resources[GPU_RESOURCE] = str(group.gpus)
        container: dict[str, Any] = {
            "name": container_name,
            "image": group.image or self.image,
            "resources": {"requests": dict(resources), "limits": dict(resources)},
        }
        if group.env:
            container["env"] = [{"name": k, "value": v} for k, v in sorted(group.env.items())]
        container = _deep_merge(container, group.container_overrides)
        node_selector: dict[str, str] = {}
        tolerations: list[Toleration] = []
        if group.gpus:
            if group.gpu_type:
                scheduling = self.gpu_types[group.gpu_type]
                node_selector.update(scheduling.node_selector)
                tolerations.extend(scheduling.tolerations)
            else:
                tolerations.append(GPU_TOLERATION)
        node_selector.update(group.node_selector)
        tolerations.extend(t for t in group.tolerations if t not in tolerations)
        pod_spec: dict[str, Any] = {"containers": [container]}
        if node_selector:
            pod_spec["nodeSelector"] = node_selector
        if tolerations:
            pod_spec["tolerations"] = [t.to_k8s() for t in tolerations]
        if self.service_account_name:
            pod_spec["serviceAccountName"] = self.service_account_name
        pod_spec = _deep_merge(pod_spec, group.pod_overrides)
        template: dict[str, Any] = {"spec": pod_spec}
        labels = {**extra_labels, **group.pod_labels}
        if labels:
            template["metadata"] = {"labels": labels}
        return template

    def to_manifest(
        self,
        *,
        name: str,
        namespace: str,
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
        validate: bool = True,
    ) -> dict[str, Any]:
        """The ``ray.io/v1`` RayJob object, checked against the CRD unless ``validate=False``.

        :param name: ``metadata.name`` (at most 47 characters, DNS-1035: KubeRay derives the
            RayCluster and service names from it).
        :param namespace: namespace to create the RayJob in.
        :param labels: extra labels (e.g. the task-instance identity) merged over ``self.labels``.
        :param annotations: extra annotations merged over ``self.annotations``.
        :param validate: run the CRD schema and KubeRay/Kueue checks.
        :raises RayJobSpecInvalidError: naming every bad field path.
        """
        all_labels = {**self.labels, **(labels or {})}
        if self.queue_name:
            all_labels[KUEUE_QUEUE_LABEL] = self.queue_name
        if self.priority_class:
            all_labels[KUEUE_PRIORITY_LABEL] = self.priority_class
        head_params = {"dashboard-host": "0.0.0.0", **({} if self.head.gpus else {"num-gpus": "0"})}
        head_params.update(self.head.ray_start_params)
        cluster: dict[str, Any] = {
            "rayVersion": self.ray_version,
            "headGroupSpec": {
                "rayStartParams": head_params,
                "template": self._pod_template(self.head, HEAD_CONTAINER, {}),
            },
        }
        workers = []
        for group in self.workers:
            workers.append(
                {
                    "groupName": group.name,
                    "replicas": group.replicas,
                    "minReplicas": group.min_replicas if group.min_replicas is not None else group.replicas,
                    "maxReplicas": group.max_replicas if group.max_replicas is not None else group.replicas,
                    "rayStartParams": dict(group.ray_start_params),
                    "template": self._pod_template(group, WORKER_CONTAINER, {}),
                }
            )
        if workers:
            cluster["workerGroupSpecs"] = workers
        spec: dict[str, Any] = {
            "entrypoint": self.entrypoint,
            "shutdownAfterJobFinishes": self.shutdown_after_job_finishes,
            "ttlSecondsAfterFinished": self.ttl_seconds_after_finished,
            "submissionMode": self.submission_mode,
            "rayClusterSpec": cluster,
        }
        runtime_env = self._runtime_env_yaml()
        if runtime_env is not None:
            spec["runtimeEnvYAML"] = runtime_env
        if self.active_deadline_seconds is not None:
            spec["activeDeadlineSeconds"] = self.active_deadline_seconds
        if self.backoff_limit is not None:
            spec["backoffLimit"] = self.backoff_limit
        if self.entrypoint_num_cpus is not None:
            spec["entrypointNumCpus"] = self.entrypoint_num_cpus
        if self.entrypoint_num_gpus is not None:
            spec["entrypointNumGpus"] = self.entrypoint_num_gpus
        if self.job_metadata:
            spec["metadata"] = dict(self.job_metadata)
        if self.queue_name:
            # Kueue's webhook would suspend it anyway; creating it suspended avoids a window in
            # which KubeRay starts a RayCluster that Kueue has not admitted.
            spec["suspend"] = True
        metadata: dict[str, Any] = {"name": name, "namespace": namespace}
        if all_labels:
            metadata["labels"] = all_labels
        all_annotations = {**self.annotations, **(annotations or {})}
        if all_annotations:
            metadata["annotations"] = all_annotations
        manifest = {
            "apiVersion": f"{RAY_GROUP}/{RAY_VERSION}",
            "kind": RAYJOB_KIND,
            "metadata": metadata,
            "spec": spec,
        }
        return validate_rayjob_manifest(manifest) if validate else manifest
