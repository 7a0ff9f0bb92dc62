"""Hooks for KubeRay RayJobs, on top of the cncf-kubernetes provider's Kubernetes hooks.

Connection handling (``kubernetes_default``: kubeconfig path or content, in-cluster, context,
namespace) is the cncf-kubernetes provider's; the RayJob calls are
:class:`~nuro_ml.kube.client.KubeRayClient`'s, which return
:class:`~nuro_ml.kube.status.RayJobInfo` and map API errors to provider exceptions.
"""

from __future__ import annotations

from typing import Any, Protocol

from airflow.providers.cncf.kubernetes.hooks.kubernetes import AsyncKubernetesHook, KubernetesHook

from nuro_ml.clients.kubernetes import AsyncKubernetesClient, KubernetesClient
from nuro_ml.kube.client import AsyncKubeRayClient, KubeRayClient
from nuro_ml.kube.kueue_workload import KueueWorkloadInfo
from nuro_ml.kube.status import RayJobInfo


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
    def rayjobs(self) -> KubeRayClient:
        """The plain RayJob client, on this hook's API client."""
        return KubeRayClient(KubernetesClient(self.api_client))

    def create_rayjob(self, *, manifest: dict[str, Any]) -> RayJobInfo:
        """Create the RayJob; raises :class:`~nuro_ml.exceptions.RayJobAlreadyExistsError` on HTTP 409."""
        namespace = manifest["metadata"].get("namespace") or self.get_namespace() or "default"
        return self.rayjobs.create_rayjob(manifest=manifest, namespace=namespace)

    def get_rayjob(self, *, name: str, namespace: str) -> RayJobInfo | None:
        """The RayJob, or None if it does not exist."""
        return self.rayjobs.get_rayjob(name=name, namespace=namespace)

    def delete_rayjob(
        self, *, name: str, namespace: str, grace_period_seconds: int | None = None, uid: str | None = None
    ) -> bool:
        """Delete the RayJob; False if there was nothing (of ours) to delete.

        See :meth:`~nuro_ml.kube.client.KubeRayClient.delete_rayjob`.
        """
        return self.rayjobs.delete_rayjob(
            name=name, namespace=namespace, grace_period_seconds=grace_period_seconds, uid=uid
        )

    def wait_rayjob_deleted(
        self, *, name: str, namespace: str, timeout: float = 120, poll_interval: float = 2
    ) -> None:
        """Block until the RayJob is gone (its finalizer removed by KubeRay)."""
        self.rayjobs.wait_rayjob_deleted(
            name=name, namespace=namespace, timeout=timeout, poll_interval=poll_interval
        )


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
            return await AsyncKubeRayClient(AsyncKubernetesClient(api_client)).get_rayjob(
                name=name, namespace=namespace
            )

    async def get_kueue_workload(self, rayjob: RayJobInfo) -> KueueWorkloadInfo | None:
        """Kueue's Workload for ``rayjob``: why a queued job still waits (None without one)."""
        async with self.get_conn() as api_client:
            return await AsyncKubeRayClient(AsyncKubernetesClient(api_client)).get_kueue_workload(rayjob)

    async def delete_rayjob(self, *, name: str, namespace: str, uid: str | None = None) -> bool:
        """Async :meth:`KubeRayHook.delete_rayjob`: False if there was nothing (of ours) to delete."""
        async with self.get_conn() as api_client:
            return await AsyncKubeRayClient(AsyncKubernetesClient(api_client)).delete_rayjob(
                name=name, namespace=namespace, uid=uid
            )
