"""Checks the CRD schema cannot express, done by the API server (ObjectMeta) or by the KubeRay
operator (``validateRayJob``, which fails a RayJob with ``ValidationFailed``) and Kueue.

Running them before the create call turns an error that would surface minutes later as a
failed RayJob into an immediate one naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from nuro_ml.kube.crds import KUEUE_QUEUE_LABEL
from nuro_ml.kube.schema import SchemaViolation

#: KubeRay appends ``-xxxxx`` to a RayJob name for its RayCluster, whose name is capped at 53.
MAX_RAYJOB_NAME_LENGTH = 47
#: Kueue admits a RayJob as one workload whose pod sets are the head plus each worker group.
KUEUE_MAX_POD_SETS = 8

_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def _v(path: str, message: str, reason: str = "FieldValueInvalid") -> SchemaViolation:
    return SchemaViolation(path=path, reason=reason, message=message)


def is_dns1035_label(value: str) -> bool:
    return len(value) <= 63 and bool(_DNS1035_LABEL.match(value))


def is_dns1123_label(value: str) -> bool:
    return len(value) <= 63 and bool(_DNS1123_LABEL.match(value))


def is_dns1123_subdomain(value: str) -> bool:
    return len(value) <= 253 and bool(_DNS1123_SUBDOMAIN.match(value))


def label_key_problem(key: str) -> str | None:
    prefix, _, name = key.rpartition("/")
    if prefix and not is_dns1123_subdomain(prefix):
        return "prefix must be a DNS-1123 subdomain"
    if not name or len(name) > 63 or not _QUALIFIED_NAME.match(name):
        return "name part must be 1-63 characters of [A-Za-z0-9-_.], starting and ending alphanumeric"
    return None


def validate_object_meta(metadata: Mapping[str, Any], *, path: str = "metadata") -> list[SchemaViolation]:
    """What the API server checks on every object's ``metadata``."""
    found: list[SchemaViolation] = []
    name = metadata.get("name")
    if not name and not metadata.get("generateName"):
        found.append(
            _v(f"{path}.name", "Required value: name or generateName is required", "FieldValueRequired")
        )
    elif name and not is_dns1123_subdomain(str(name)):
        found.append(_v(f"{path}.name", f"Invalid value: {name!r}: must be a lowercase RFC 1123 subdomain"))
    namespace = metadata.get("namespace")
    if namespace and not is_dns1123_label(str(namespace)):
        found.append(
            _v(f"{path}.namespace", f"Invalid value: {namespace!r}: must be a lowercase RFC 1123 label")
        )
    for key, value in (metadata.get("labels") or {}).items():
        problem = label_key_problem(str(key))
        if problem:
            found.append(_v(f"{path}.labels", f"Invalid value: {key!r}: {problem}"))
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            found.append(
                _v(
                    f"{path}.labels",
                    f"Invalid value: {value!r}: label value for {key!r} must be at most 63 "
                    "characters of [A-Za-z0-9-_.], starting and ending alphanumeric",
                )
            )
    for key, value in (metadata.get("annotations") or {}).items():
        problem = label_key_problem(str(key))
        if problem:
            found.append(_v(f"{path}.annotations", f"Invalid value: {key!r}: {problem}"))
        if not isinstance(value, str):
            found.append(_v(f"{path}.annotations", f"Invalid value: annotation {key!r} must be a string"))
    return found


def _autoscaling(cluster: Mapping[str, Any]) -> bool:
    return bool(cluster.get("enableInTreeAutoscaling"))


def validate_rayjob_semantics(obj: Mapping[str, Any]) -> list[SchemaViolation]:
    """KubeRay's own RayJob checks (metadata, spec, cluster spec) that the CRD schema lacks."""
    found: list[SchemaViolation] = []
    metadata = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    name = str(metadata.get("name") or "")
    if name and len(name) > MAX_RAYJOB_NAME_LENGTH:
        found.append(
            _v(
                "metadata.name",
                f"Invalid value: {name!r}: a RayJob name must be no more than "
                f"{MAX_RAYJOB_NAME_LENGTH} characters",
                "FieldValueTooLong",
            )
        )
    if name and not is_dns1035_label(name):
        found.append(
            _v(
                "metadata.name",
                f"Invalid value: {name!r}: a RayJob name must be a DNS-1035 label "
                "(lowercase letters, digits and '-', starting with a letter)",
            )
        )
    if spec.get("suspend") and not spec.get("shutdownAfterJobFinishes"):
        found.append(
            _v(
                "spec.shutdownAfterJobFinishes",
                "Invalid value: a RayJob with shutdownAfterJobFinishes "
                "set to false is not allowed to be suspended",
            )
        )
    if int(spec.get("ttlSecondsAfterFinished") or 0) < 0:
        found.append(_v("spec.ttlSecondsAfterFinished", "Invalid value: must be a non-negative integer"))
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None and isinstance(deadline, int) and deadline <= 0:
        found.append(
            _v("spec.activeDeadlineSeconds", f"Invalid value: {deadline}: must be a positive integer")
        )
    selector = spec.get("clusterSelector") or {}
    if selector and spec.get("suspend"):
        found.append(
            _v("spec.clusterSelector", "Invalid value: the clusterSelector mode does not support suspend")
        )
    cluster = spec.get("rayClusterSpec")
    if not cluster and not selector:
        found.append(
            _v(
                "spec.rayClusterSpec",
                "Required value: one of rayClusterSpec or clusterSelector must be set",
                "FieldValueRequired",
            )
        )
    if isinstance(cluster, Mapping):
        found.extend(_validate_cluster(cluster))
    return found


def _containers(group: Mapping[str, Any]) -> list[Any]:
    template = group.get("template") or {}
    pod_spec = template.get("spec") or {}
    return list(pod_spec.get("containers") or [])


def _validate_cluster(cluster: Mapping[str, Any]) -> list[SchemaViolation]:
    found: list[SchemaViolation] = []
    base = "spec.rayClusterSpec"
    head = cluster.get("headGroupSpec") or {}
    if not _containers(head):
        found.append(
            _v(
                f"{base}.headGroupSpec.template.spec.containers",
                "Required value: the head group needs at least one container",
                "FieldValueRequired",
            )
        )
    autoscaling = _autoscaling(cluster)
    seen: dict[str, int] = {}
    for index, group in enumerate(cluster.get("workerGroupSpecs") or []):
        path = f"{base}.workerGroupSpecs[{index}]"
        group_name = str(group.get("groupName", ""))
        if group_name in seen:
            found.append(
                _v(
                    f"{path}.groupName",
                    f"Duplicate value: {group_name!r} is also workerGroupSpecs[{seen[group_name]}]",
                    "FieldValueDuplicate",
                )
            )
        seen.setdefault(group_name, index)
        if not _containers(group):
            found.append(
                _v(
                    f"{path}.template.spec.containers",
                    "Required value: a worker group needs at least one container",
                    "FieldValueRequired",
                )
            )
        low, high, replicas = group.get("minReplicas"), group.get("maxReplicas"), group.get("replicas")
        if not autoscaling and (low is None or high is None):
            found.append(
                _v(
                    f"{path}.minReplicas",
                    "Required value: minReplicas and maxReplicas must both be set "
                    "when autoscaling is disabled",
                    "FieldValueRequired",
                )
            )
        for key, value in (("minReplicas", low), ("maxReplicas", high), ("replicas", replicas)):
            if isinstance(value, int) and value < 0:
                found.append(_v(f"{path}.{key}", f"Invalid value: {value}: must be non-negative"))
        if isinstance(low, int) and isinstance(high, int) and low > high:
            found.append(_v(f"{path}.minReplicas", f"Invalid value: {low}: greater than maxReplicas {high}"))
        if (
            not autoscaling
            and isinstance(replicas, int)
            and isinstance(low, int)
            and isinstance(high, int)
            and not low <= replicas <= high
        ):
            found.append(
                _v(
                    f"{path}.replicas",
                    f"Invalid value: {replicas}: must lie within [minReplicas {low}, maxReplicas {high}]",
                )
            )
    return found


def validate_kueue_constraints(obj: Mapping[str, Any]) -> list[SchemaViolation]:
    """Kueue's limits for a RayJob it manages (one with the ``queue-name`` label)."""
    metadata = obj.get("metadata") or {}
    labels = metadata.get("labels") or {}
    if KUEUE_QUEUE_LABEL not in labels:
        return []
    found: list[SchemaViolation] = []
    spec = obj.get("spec") or {}
    if not is_dns1123_subdomain(str(labels[KUEUE_QUEUE_LABEL])):
        found.append(
            _v(
                "metadata.labels",
                f"Invalid value: {labels[KUEUE_QUEUE_LABEL]!r}: the LocalQueue name "
                "must be a DNS-1123 subdomain",
            )
        )
    if spec.get("clusterSelector"):
        found.append(
            _v(
                "spec.clusterSelector",
                "Forbidden: a Kueue-managed RayJob cannot run on an existing RayCluster",
                "FieldValueForbidden",
            )
        )
    if not spec.get("shutdownAfterJobFinishes"):
        found.append(
            _v(
                "spec.shutdownAfterJobFinishes",
                "Invalid value: a Kueue-managed RayJob must delete its "
                "RayCluster when it finishes (shutdownAfterJobFinishes: true)",
            )
        )
    cluster = spec.get("rayClusterSpec") or {}
    if _autoscaling(cluster):
        found.append(
            _v(
                "spec.rayClusterSpec.enableInTreeAutoscaling",
                "Forbidden: Kueue reserves a fixed size for the RayCluster, so autoscaling is not supported",
                "FieldValueForbidden",
            )
        )
    pod_sets = 1 + len(cluster.get("workerGroupSpecs") or [])
    if pod_sets > KUEUE_MAX_POD_SETS:
        found.append(
            _v(
                "spec.rayClusterSpec.workerGroupSpecs",
                f"Too many: {pod_sets - 1} worker groups: Kueue "
                f"admits at most {KUEUE_MAX_POD_SETS} pod sets (head + workers)",
                "FieldValueTooMany",
            )
        )
    return found
