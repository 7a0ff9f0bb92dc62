"""Hooks for KubeRay RayJobs, on top of the cncf-kubernetes provider's Kubernetes hooks.

Connection handling (``kubernetes_default``: kubeconfig path or content, in-cluster, context,
namespace) is the cncf-kubernetes provider's; these hooks add typed RayJob calls that return
:class:`~nuro_ml.kube.status.RayJobInfo` and map API errors to provider exceptions.
"""

from __future__ import annotations

import json
import time
from typing import Any, Protocol

from airflow.providers.cncf.kubernetes.hooks.kubernetes import AsyncKubernetesHook, KubernetesHook
from kubernetes.client import CustomObjectsApi
from kubernetes.client.exceptions import ApiException
from kubernetes_asyncio.client import CustomObjectsApi as AsyncCustomObjectsApi
from kubernetes_asyncio.client import V1DeleteOptions, V1Preconditions
from kubernetes_asyncio.client.exceptions import ApiException as AsyncApiException

from nuro_ml.exceptions import KubeRayJobError, RayJobAlreadyExistsError, RayJobSpecInvalidError
from nuro_ml.kube.crds import RAY_GROUP, RAY_VERSION, RAYJOB_PLURAL
from nuro_ml.kube.status import RayJobInfo


def _status_body(body: Any) -> dict[str, Any]:
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    try:
        parsed = json.loads(body) if isinstance(body, str) else {}
    except ValueError:
        return {"message": str(body)}
    return parsed if isinstance(parsed, dict) else {}


def api_error(
    err: ApiException | AsyncApiException, *, action: str, name: str, namespace: str
) -> KubeRayJobError:
    """Turn an API error into the provider exception that says what failed and where."""
    status = _status_body(err.body)
    message = status.get("message") or err.reason or "no message"
    where = f"RayJob {namespace}/{name}"
    if err.status == 422:
        causes = (status.get("details") or {}).get("causes") or []
        lines = [f"{c.get('field', '<root>')}: {c.get('message', '')}" for c in causes]
        return RayJobSpecInvalidError(
            f"API server rejected {where} on {action}: {message}", lines, status_code=422
        )
    if err.status == 409:
        return RayJobAlreadyExistsError(f"{where} already exists ({action}): {message}")
    if err.status in (401, 403):
        return KubeRayJobError(
            f"not allowed to {action} {where} (HTTP {err.status}): {message}; "
            "check the Kubernetes connection's credentials and RBAC for rayjobs.ray.io",
            status_code=err.status,
        )
    return KubeRayJobError(
        f"failed to {action} {where} (HTTP {err.status}): {message}", status_code=err.status
    )


def delete_options(grace_period_seconds: int | None, uid: str | None) -> dict[str, Any]:
    """DeleteOptions: background propagation, optional grace period and uid precondition."""
    body: dict[str, Any] = {"propagationPolicy": "Background"}
    if grace_period_seconds is not None:
        body["gracePeriodSeconds"] = grace_period_seconds
    if uid:
        body["preconditions"] = {"uid": uid}
    return body


def _nothing_to_delete(err: ApiException | AsyncApiException, uid: str | None) -> bool:
    # 404: already gone. 409 with a uid precondition: the name now belongs to another RayJob.
    return err.status == 404 or (err.status == 409 and uid is not None)


class KubeRayHookProtocol(Protocol):
    """What :class:`~nuro_ml.operators.kuberay.KubeRayJobOperator` needs from a hook."""

    def get_namespace(self) -> str | None: ...

    def create_rayjob(self, *, manifest: dict[str, Any]) -> RayJobInfo: ...

    def get_rayjob(self, *, name: str, namespace: str) -> RayJobInfo | None: ...

    def delete_rayjob(
        self, *, name: str, namespace: str, grace_period_seconds: int | None = None, uid: str | None = None
    ) -> bool: ...

    def wait_rayjob_deleted(
        self, *, name: str, namespace: str, timeout: float, poll_interval: float
    ) -> None: ...


class KubeRayHook(KubernetesHook):
    """Create, read and delete ``ray.io/v1`` RayJobs through a Kubernetes connection.

    Takes the same arguments as :class:`~airflow.providers.cncf.kubernetes.hooks.kubernetes.KubernetesHook`
    (``conn_id``, ``config_file``, ``cluster_context``, ``in_cluster``...).
    """

    hook_name = "KubeRay"

    @property
    def _custom_objects(self) -> CustomObjectsApi:
        return self.custom_object_client

    def create_rayjob(self, *, manifest: dict[str, Any]) -> RayJobInfo:
        """Create the RayJob; raises :class:`RayJobAlreadyExistsError` on HTTP 409."""
        metadata = manifest["metadata"]
        name, namespace = metadata["name"], metadata.get("namespace") or self.get_namespace() or "default"
        try:
            created = self._custom_objects.create_namespaced_custom_object(
                group=RAY_GROUP, version=RAY_VERSION, namespace=namespace, plural=RAYJOB_PLURAL, body=manifest
            )
        except ApiException as err:
            raise api_error(err, action="create", name=name, namespace=namespace) from err
        return RayJobInfo.from_object(created)

    def get_rayjob(self, *, name: str, namespace: str) -> RayJobInfo | None:
        """The RayJob, or None if it does not exist."""
        try:
            obj = self._custom_objects.get_namespaced_custom_object(
                group=RAY_GROUP, version=RAY_VERSION, namespace=namespace, plural=RAYJOB_PLURAL, name=name
            )
        except ApiException as err:
            if err.status == 404:
                return None
            raise api_error(err, action="get", name=name, namespace=namespace) from err
        return RayJobInfo.from_object(obj)

    def delete_rayjob(
        self, *, name: str, namespace: str, grace_period_seconds: int | None = None, uid: str | None = None
    ) -> bool:
        """Delete the RayJob (KubeRay then stops the Ray job and deletes its RayCluster).

        With ``uid``, only that incarnation of the RayJob is deleted: one re-created under the
        same name by someone else is left alone. Returns False if there was nothing (of ours) to
        delete, so callers can delete idempotently.
        """
        try:
            self._custom_objects.delete_namespaced_custom_object(
                group=RAY_GROUP,
                version=RAY_VERSION,
                namespace=namespace,
                plural=RAYJOB_PLURAL,
                name=name,
                body=delete_options(grace_period_seconds, uid),
            )
        except ApiException as err:
            if _nothing_to_delete(err, uid):
                return False
            raise api_error(err, action="delete", name=name, namespace=namespace) from err
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


class AsyncKubernetesConfigHook(AsyncKubernetesHook):
    """:class:`AsyncKubernetesHook` that honours ``config_file`` like the sync hook does.

    The upstream async hook reads the kubeconfig path only from the connection extra, so a
    ``config_file`` passed by an operator (and serialized into its trigger) would be ignored.
    """

    async def _get_field(self, field_name: str) -> Any:
        if field_name == "kube_config_path" and self.config_file:
            return self.config_file
        return await super()._get_field(field_name)


class AsyncKubeRayHook(AsyncKubernetesConfigHook):
    """Async twin of :class:`KubeRayHook` for triggers (``kubernetes_asyncio`` client)."""

    hook_name = "KubeRay (async)"

    async def get_rayjob(self, *, name: str, namespace: str) -> RayJobInfo | None:
        """The RayJob, or None if it does not exist."""
        async with self.get_conn() as api_client:
            api = AsyncCustomObjectsApi(api_client)
            try:
                obj = await api.get_namespaced_custom_object(
                    group=RAY_GROUP, version=RAY_VERSION, namespace=namespace, plural=RAYJOB_PLURAL, name=name
                )
            except AsyncApiException as err:
                if err.status == 404:
                    return None
                raise api_error(err, action="get", name=name, namespace=namespace) from err
        return RayJobInfo.from_object(obj)

    async def delete_rayjob(self, *, name: str, namespace: str, uid: str | None = None) -> bool:
        """Async :meth:`KubeRayHook.delete_rayjob`: False if there was nothing (of ours) to delete."""
        async with self.get_conn() as api_client:
            api = AsyncCustomObjectsApi(api_client)
            try:
                await api.delete_namespaced_custom_object(
                    group=RAY_GROUP,
                    version=RAY_VERSION,
                    namespace=namespace,
                    plural=RAYJOB_PLURAL,
                    name=name,
                    body=V1DeleteOptions(
                        propagation_policy="Background",
                        preconditions=V1Preconditions(uid=uid) if uid else None,
                    ),
                )
            except AsyncApiException as err:
                if _nothing_to_delete(err, uid):
                    return False
                raise api_error(err, action="delete", name=name, namespace=namespace) from err
        return True
