"""Deterministic RayJob names and identity annotations for Airflow task instances.

The name depends only on (dag_id, run_id, task_id, map_index), so every try of a task
instance computes the same name and a retry finds the RayJob its earlier try created
(HTTP 409 on create) instead of starting the work twice. The annotations record the full
identity, so a name collision with another task's RayJob is detected rather than adopted.
"""

from __future__ import annotations

from collections.abc import Mapping

from nuro_ml.kube.validation import MAX_RAYJOB_NAME_LENGTH
from nuro_ml.task_key import DNS_LABEL, TaskKey, slug

ANNOTATION_PREFIX = "nuro-ml.io"
IDENTITY_ANNOTATION = f"{ANNOTATION_PREFIX}/task-instance"
TRY_ANNOTATION = f"{ANNOTATION_PREFIX}/try-number"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "nuro-ml"
TASK_LABEL = f"{ANNOTATION_PREFIX}/task-id"

_DIGEST_LENGTH = 10


def rayjob_name(key: TaskKey, *, prefix: str | None = None) -> str:
    """A valid RayJob name (DNS-1035, at most 47 characters) unique per task instance.

    ``<slug of prefix or task_id>-<10 hex digits of sha256(key)>``; the slug keeps the
    name readable in ``kubectl get rayjobs``, the digest makes it unique.
    """
    readable = slug(prefix if prefix is not None else key.task_id, DNS_LABEL)
    if not readable or not readable[0].isalpha():
        readable = f"rayjob-{readable}".rstrip("-")
    readable = readable[: MAX_RAYJOB_NAME_LENGTH - _DIGEST_LENGTH - 1].rstrip("-")
    return f"{readable}-{key.digest(_DIGEST_LENGTH)}"


def identity_labels(*, task_id: str) -> dict[str, str]:
    """Labels to select the provider's RayJobs (values must be valid label values)."""
    return {MANAGED_BY_LABEL: MANAGED_BY_VALUE, TASK_LABEL: slug(task_id, DNS_LABEL, max_length=63) or "task"}


def identity_annotations(key: TaskKey, *, try_number: int) -> dict[str, str]:
    """Annotations recording which task instance (and which try) created the RayJob."""
    return {IDENTITY_ANNOTATION: key.format(), TRY_ANNOTATION: str(try_number)}


def owned_by(annotations: Mapping[str, str], key: TaskKey) -> bool:
    """Whether an existing RayJob was created by the task instance ``key``."""
    return annotations.get(IDENTITY_ANNOTATION) == key.format()
