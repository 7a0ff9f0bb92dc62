"""Kueue topology-aware scheduling (TAS) requests on a RayJob's pod sets.

Kueue reads a pod set's topology request from annotations on its pod template
(``apis/kueue/v1beta2/topology_types.go``): all pods in one domain of a level
(``podset-required-topology``), preferably so (``podset-preferred-topology``), no constraint
but counted by TAS (``podset-unconstrained-topology``), and each slice of N pods in one domain
(``podset-slice-required-topology`` with ``podset-slice-size``). A RayJob's pod sets are its
head group and each worker group.

:func:`topology_violations` repeats the checks of Kueue's RayJob webhook
(``jobframework.ValidateTASPodSetRequest`` and ``ValidateSliceSizeAnnotationUpperBound``), so a
request Kueue would refuse fails before the create call, naming the annotation.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from nuro_ml.kube.crds import KUEUE_QUEUE_LABEL
from nuro_ml.kube.schema import SchemaViolation
from nuro_ml.kube.validation import label_key_problem

PODSET_REQUIRED_TOPOLOGY = "kueue.x-k8s.io/podset-required-topology"
PODSET_PREFERRED_TOPOLOGY = "kueue.x-k8s.io/podset-preferred-topology"
PODSET_UNCONSTRAINED_TOPOLOGY = "kueue.x-k8s.io/podset-unconstrained-topology"
PODSET_SLICE_REQUIRED_TOPOLOGY = "kueue.x-k8s.io/podset-slice-required-topology"
PODSET_SLICE_SIZE = "kueue.x-k8s.io/podset-slice-size"
PODSET_GROUP_NAME = "kueue.x-k8s.io/podset-group-name"
#: Every annotation Kueue reads a topology request from.
TOPOLOGY_ANNOTATIONS = (
    PODSET_REQUIRED_TOPOLOGY,
    PODSET_PREFERRED_TOPOLOGY,
    PODSET_UNCONSTRAINED_TOPOLOGY,
    PODSET_SLICE_REQUIRED_TOPOLOGY,
    PODSET_SLICE_SIZE,
    PODSET_GROUP_NAME,
)
#: The lowest level of a Kueue ``Topology`` (its CRD only allows the hostname label there).
HOSTNAME_LEVEL = "kubernetes.io/hostname"


@dataclass(frozen=True)
class TopologyRequest:
    """One pod set's TAS request, as the annotations Kueue reads it from."""

    #: All pods of the pod set in one domain of this level.
    required: str | None = None
    #: All pods in one domain of this level if possible, else the next level up.
    preferred: str | None = None
    #: Counted by TAS without a domain constraint.
    unconstrained: bool = False
    #: Each slice of ``slice_size`` pods in one domain of this level.
    slice_required: str | None = None
    slice_size: int | None = None

    def annotations(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.required:
            out[PODSET_REQUIRED_TOPOLOGY] = self.required
        if self.preferred:
            out[PODSET_PREFERRED_TOPOLOGY] = self.preferred
        if self.unconstrained:
            out[PODSET_UNCONSTRAINED_TOPOLOGY] = "true"
        if self.slice_required:
            out[PODSET_SLICE_REQUIRED_TOPOLOGY] = self.slice_required
        if self.slice_size is not None:
            out[PODSET_SLICE_SIZE] = str(self.slice_size)
        return out


@dataclass(frozen=True)
class PodSetTemplate:
    """A RayJob pod set: its Kueue name, pod count, field path and pod template (mutable)."""

    name: str
    count: int
    path: str
    template: dict[str, Any]


def rayjob_pod_sets(manifest: Mapping[str, Any]) -> Iterator[PodSetTemplate]:
    """The head and worker-group pod sets of a RayJob, as Kueue builds its workload from them."""
    cluster = (manifest.get("spec") or {}).get("rayClusterSpec") or {}
    base = "spec.rayClusterSpec"
    head = cluster.get("headGroupSpec")
    if isinstance(head, dict) and isinstance(head.get("template"), dict):
        yield PodSetTemplate("head", 1, f"{base}.headGroupSpec.template", head["template"])
    for index, group in enumerate(cluster.get("workerGroupSpecs") or []):
        if not isinstance(group, dict) or not isinstance(group.get("template"), dict):
            continue
        replicas = group.get("replicas")
        yield PodSetTemplate(
            str(group.get("groupName") or f"workers-{index}"),
            replicas if isinstance(replicas, int) else 1,
            f"{base}.workerGroupSpecs[{index}].template",
            group["template"],
        )


def has_topology_request(template: Mapping[str, Any]) -> bool:
    annotations = (template.get("metadata") or {}).get("annotations") or {}
    return any(key in annotations for key in TOPOLOGY_ANNOTATIONS)


def set_topology_request(template: dict[str, Any], request: TopologyRequest) -> None:
    """Put ``request`` on a pod template, replacing any topology request it had."""
    annotations = template.setdefault("metadata", {}).setdefault("annotations", {})
    for key in TOPOLOGY_ANNOTATIONS:
        annotations.pop(key, None)
    annotations.update(request.annotations())


def _label_name_problem(value: str) -> str | None:
    # Kueue checks levels with metavalidation.ValidateLabelName: the rule for label keys.
    return label_key_problem(value) if value else "must not be empty"


def _violation(path: str, message: str, reason: str = "FieldValueInvalid") -> SchemaViolation:
    return SchemaViolation(path=path, reason=reason, message=message)


def topology_violations(template: Mapping[str, Any], *, path: str, count: int) -> list[SchemaViolation]:
    """What Kueue's webhook refuses in one pod template's topology annotations.

    :param template: the pod template (its ``metadata.annotations`` are read).
    :param path: field path of the template, for the messages.
    :param count: pods in the pod set (the slice size may not exceed it).
    """
    annotations = (template.get("metadata") or {}).get("annotations") or {}
    where = f"{path}.metadata.annotations"
    found: list[SchemaViolation] = []
    exclusive = [PODSET_REQUIRED_TOPOLOGY, PODSET_PREFERRED_TOPOLOGY, PODSET_UNCONSTRAINED_TOPOLOGY]
    present = [k for k in exclusive if k in annotations]
    if len(present) > 1:
        found.append(
            _violation(
                where, f"Invalid value: must not contain more than one topology annotation: {exclusive}"
            )
        )
    for key in (PODSET_REQUIRED_TOPOLOGY, PODSET_PREFERRED_TOPOLOGY, PODSET_SLICE_REQUIRED_TOPOLOGY):
        if key in annotations:
            problem = _label_name_problem(str(annotations[key]))
            if problem:
                found.append(
                    _violation(
                        f"{where}[{key}]",
                        f"Invalid value: {annotations[key]!r}: a topology level is a node label: {problem}",
                    )
                )
    if PODSET_UNCONSTRAINED_TOPOLOGY in annotations and str(
        annotations[PODSET_UNCONSTRAINED_TOPOLOGY]
    ).lower() not in ("true", "false", "1", "0", "t", "f"):
        value = annotations[PODSET_UNCONSTRAINED_TOPOLOGY]
        found.append(
            _violation(
                f"{where}[{PODSET_UNCONSTRAINED_TOPOLOGY}]", f"Invalid value: {value!r}: must be a boolean"
            )
        )
    if PODSET_GROUP_NAME in annotations and str(annotations[PODSET_GROUP_NAME]).isdigit():
        found.append(
            _violation(
                f"{where}[{PODSET_GROUP_NAME}]",
                f"Invalid value: {annotations[PODSET_GROUP_NAME]!r}: must not be a number",
            )
        )
    if PODSET_SLICE_SIZE in annotations:
        raw = str(annotations[PODSET_SLICE_SIZE])
        size = int(raw) if raw.lstrip("-").isdigit() else None
        slice_path = f"{where}[{PODSET_SLICE_SIZE}]"
        if size is None:
            found.append(_violation(slice_path, f"Invalid value: {raw!r}: must be a numeric value"))
        elif size < 1:
            found.append(
                _violation(slice_path, f"Invalid value: {raw!r}: must be greater than or equal to 1")
            )
        elif size > count:
            found.append(
                _violation(
                    slice_path, f"Invalid value: {raw!r}: must not be greater than pod set count {count}"
                )
            )
        if PODSET_SLICE_REQUIRED_TOPOLOGY not in annotations:
            found.append(
                _violation(
                    slice_path,
                    f"Forbidden: cannot be set when {PODSET_SLICE_REQUIRED_TOPOLOGY!r} is not present",
                    "FieldValueForbidden",
                )
            )
    elif PODSET_SLICE_REQUIRED_TOPOLOGY in annotations:
        found.append(
            _violation(
                f"{where}[{PODSET_SLICE_SIZE}]",
                "Required value: slice size is required if slice topology is requested",
                "FieldValueRequired",
            )
        )
    if PODSET_GROUP_NAME in annotations:
        for key in (PODSET_SLICE_SIZE, PODSET_SLICE_REQUIRED_TOPOLOGY):
            if key in annotations:
                found.append(
                    _violation(
                        f"{where}[{key}]",
                        f"Forbidden: cannot be set when {PODSET_GROUP_NAME!r} is present",
                        "FieldValueForbidden",
                    )
                )
    return found


def validate_kueue_topology(obj: Mapping[str, Any]) -> list[SchemaViolation]:
    """The topology requests of a Kueue-managed RayJob (one with the ``queue-name`` label)."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    if KUEUE_QUEUE_LABEL not in labels:
        return []
    found: list[SchemaViolation] = []
    for pod_set in rayjob_pod_sets(obj):
        found.extend(topology_violations(pod_set.template, path=pod_set.path, count=pod_set.count))
    return found
