"""RayJobs through the Kubernetes API, with no Airflow: create, read, delete, wait for deletion.

The hooks in :mod:`nuro_ml.hooks.kuberay` wrap these clients with the Kubernetes connection;
API errors become provider exceptions chosen by their HTTP status.
"""

from __future__ import annotations

import time
from typing import Any

from nuro_ml.clients.kubernetes import AsyncKubernetesClient, KubernetesClient, delete_options
from nuro_ml.exceptions import (
    KubeRayJobError,
    KubernetesApiError,
    RayJobAlreadyExistsError,
    RayJobSpecInvalidError,
)
from nuro_ml.kube.crds import KUEUE_GROUP, RAY_GROUP, RAY_VERSION, RAYJOB_PLURAL
from nuro_ml.kube.kueue_workload import (
    WORKLOAD_PLURAL,
    WORKLOAD_VERSION,
    KueueWorkloadInfo,
    current_workload,
    workload_selector,
)
from nuro_ml.kube.status import RayJobInfo


def rayjob_error(err: KubernetesApiError, *, action: str, name: str, namespace: str) -> KubeRayJobError:
    """The provider exception for a failed RayJob call, chosen by the HTTP status."""
    message = err.status.get("message") or "no message"
    where = f"RayJob {namespace}/{name}"
    if err.status_code == 422:
        causes = (err.status.get("details") or {}).get("causes") or []
        lines = [f"{c.get('field', '<root>')}: {c.get('message', '')}" for c in causes]
        return RayJobSpecInvalidError(
            f"API server rejected {where} on {action}: {message}", lines, status_code=422
        )
    if err.status_code == 409:
        return RayJobAlreadyExistsError(f"{where} already exists ({action}): {message}")
    if err.status_code in (401, 403):
        return KubeRayJobError(
            f"not allowed to {action} {where} (HTTP {err.status_code}): {message}; "
            "check the Kubernetes connection's credentials and RBAC for rayjobs.ray.io",
            status_code=err.status_code,
        )
    return KubeRayJobError(
        f"failed to {action} {where} (HTTP {err.status_code}): {message}", status_code=err.status_code
    )


def _nothing_to_delete(err: KubernetesApiError, uid: str | None) -> bool:
    # 404: already gone. 409 with a uid precondition: the name now belongs to another RayJob.
    return err.status_code == 404 or (err.status_code == 409 and uid is not None)


class KubeRayClient:
    """Blocking RayJob calls.

    :param kubernetes: the Kubernetes API client to send them through.
    """

    def __init__(self, kubernetes: KubernetesClient) -> None:
        self.kubernetes = kubernetes

    def create_rayjob(self, *, manifest: dict[str, Any], namespace: str) -> RayJobInfo:
        """Create the RayJob; raises :class:`RayJobAlreadyExistsError` on HTTP 409."""
        name = manifest["metadata"]["name"]
        try:
            created = self.kubernetes.create_namespaced_custom_object(
                RAY_GROUP, RAY_VERSION, namespace, RAYJOB_PLURAL, manifest
            )
        except KubernetesApiError as err:
            raise rayjob_error(err, action="create", name=name, namespace=namespace) from err
        return RayJobInfo.from_object(created)

    def get_rayjob(self, *, name: str, namespace: str) -> RayJobInfo | None:
        """The RayJob, or None if it does not exist."""
        try:
            obj = self.kubernetes.get_namespaced_custom_object(
                RAY_GROUP, RAY_VERSION, namespace, RAYJOB_PLURAL, name
            )
        except KubernetesApiError as err:
            raise rayjob_error(err, action="get", name=name, namespace=namespace) from err
        return RayJobInfo.from_object(obj) if obj is not None else None

    def delete_rayjob(
        self, *, name: str, namespace: str, grace_period_seconds: int | None = None, uid: str | None = None
    ) -> bool:
        """Delete the RayJob (KubeRay then stops the Ray job and deletes its RayCluster).

        With ``uid``, only that incarnation of the RayJob is deleted: one re-created under the
        same name by someone else is left alone. Returns False if there was nothing (of ours) to
        delete, so callers can delete idempotently.
        """
        try:
            self.kubernetes.delete_namespaced_custom_object(
                RAY_GROUP,
                RAY_VERSION,
                namespace,
                RAYJOB_PLURAL,
                name,
                delete_options(grace_period_seconds, uid),
            )
        except KubernetesApiError as err:
            if _nothing_to_delete(err, uid):
                return False
            raise rayjob_error(err, action="delete", name=name, namespace=namespace) from err
        return True

    def wait_rayjob_deleted(
        self, *, name: str, namespace: str, timeout: float = 120, poll_interval: float = 2
    ) -> None:
        """Block until the RayJob is gone (its finalizer removed by KubeRay)."""
        deadline = time.monotonic() + timeout
        while self.get_rayjob(name=name, namespace=namespace) is not None:
            if time.monotonic() > deadline:
                raise KubeRayJobError(
                    f"RayJob {namespace}/{name} still exists {timeout:.0f}s after deletion; "
                    "is the KubeRay operator running (it removes the ray.io/rayjob-stopjob-finalizer)?"
                )
            time.sleep(poll_interval)


class AsyncKubeRayClient:
    """Asyncio RayJob reads and deletes, for triggers.

    :param kubernetes: the asyncio Kubernetes API client to send them through.
    """

    def __init__(self, kubernetes: AsyncKubernetesClient) -> None:
        self.kubernetes = kubernetes

    async def get_rayjob(self, *, name: str, namespace: str) -> RayJobInfo | None:
        """The RayJob, or None if it does not exist."""
        try:
            obj = await self.kubernetes.get_namespaced_custom_object(
                RAY_GROUP, RAY_VERSION, namespace, RAYJOB_PLURAL, name
            )
        except KubernetesApiError as err:
            raise rayjob_error(err, action="get", name=name, namespace=namespace) from err
        return RayJobInfo.from_object(obj) if obj is not None else None

    async def get_kueue_workload(self, rayjob: RayJobInfo) -> KueueWorkloadInfo | None:
        """The Workload through which Kueue admits ``rayjob``; None if Kueue has made none.

        A cluster without Kueue (no ``workloads.kueue.x-k8s.io``, HTTP 404) has none either.

        :raises KubeRayJobError: the API refused the list, e.g. HTTP 403 when the connection's
            role may not list ``workloads.kueue.x-k8s.io``.
        """
        try:
            objects = await self.kubernetes.list_namespaced_custom_objects(
                KUEUE_GROUP,
                WORKLOAD_VERSION,
                rayjob.namespace,
                WORKLOAD_PLURAL,
                label_selector=workload_selector(rayjob.uid),
            )
        except KubernetesApiError as err:
            if err.status_code == 404:
                return None
            raise KubeRayJobError(
                f"cannot read the Kueue workload of RayJob {rayjob.namespace}/{rayjob.name}: {err}; "
                "let the Kubernetes connection's role list workloads.kueue.x-k8s.io",
                status_code=err.status_code,
            ) from err
        return current_workload(objects, rayjob.uid)

    async def delete_rayjob(self, *, name: str, namespace: str, uid: str | None = None) -> bool:
        """Async :meth:`KubeRayClient.delete_rayjob`: False if there was nothing (of ours) to delete."""
        try:
            await self.kubernetes.delete_namespaced_custom_object(
                RAY_GROUP, RAY_VERSION, namespace, RAYJOB_PLURAL, name, delete_options(uid=uid)
            )
        except KubernetesApiError as err:
            if _nothing_to_delete(err, uid):
                return False
            raise rayjob_error(err, action="delete", name=name, namespace=namespace) from err
        return True
