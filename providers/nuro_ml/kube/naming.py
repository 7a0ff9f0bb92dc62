"""Deterministic RayJob names and identity annotations for Airflow task instances.

The name depends only on (dag_id, run_id, task_id, map_index), so every try of a task
instance computes the same name and a retry finds the RayJob its earlier try created
(HTTP 409 on create) instead of starting the work twice. The annotations record the full
identity, so a name collision with another task's RayJob is detected rather than adopted.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

from nuro_ml.kube.validation import MAX_RAYJOB_NAME_LENGTH

ANNOTATION_PREFIX = "nuro-ml.io"
IDENTITY_ANNOTATION = f"{ANNOTATION_PREFIX}/task-instance"
TRY_ANNOTATION = f"{ANNOTATION_PREFIX}/try-number"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "nuro-ml"
TASK_LABEL = f"{ANNOTATION_PREFIX}/task-id"

_DIGEST_LENGTH = 10


def task_instance_identity(*, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str:
    """The key every remote side effect of a task instance is idempotent on."""
    return f"{dag_id}/{run_id}/{task_id}/{map_index}"


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug


def rayjob_name(
    *, dag_id: str, run_id: str, task_id: str, map_index: int = -1, prefix: str | None = None
) -> str:
    """A valid RayJob name (DNS-1035, at most 47 characters) unique per task instance.

    ``<slug of prefix or task_id>-<10 hex digits of sha256(identity)>``; the slug keeps the
    name readable in ``kubectl get rayjobs``, the digest makes it unique.
    """
    identity = task_instance_identity(dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=map_index)
    digest = hashlib.sha256(identity.encode("utf-8")).hexdigest()[:_DIGEST_LENGTH]
    slug = _slug(prefix if prefix is not None else task_id)
    if not slug or not slug[0].isalpha():
        slug = f"rayjob-{slug}".rstrip("-")
    slug = slug[: MAX_RAYJOB_NAME_LENGTH - _DIGEST_LENGTH - 1].rstrip("-")
    return f"{slug}-{digest}"


def identity_labels(*, task_id: str) -> dict[str, str]:
    """Labels to select the provider's RayJobs (values must be valid label values)."""
    return {MANAGED_BY_LABEL: MANAGED_BY_VALUE, TASK_LABEL: _slug(task_id)[:63].strip("-") or "task"}


def identity_annotations(
    *, dag_id: str, run_id: str, task_id: str, map_index: int, try_number: int
) -> dict[str, str]:
    """Annotations recording which task instance (and which try) created the RayJob."""
    return {
        IDENTITY_ANNOTATION: task_instance_identity(
            dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=map_index
        ),
        TRY_ANNOTATION: str(try_number),
    }


def owned_by(annotations: Mapping[str, str], identity: str) -> bool:
    """Whether an existing RayJob was created by the task instance ``identity``."""
    return annotations.get(IDENTITY_ANNOTATION) == identity
