"""Airflow's connections for the engine clients (:mod:`nuro_ml.clients.connections`).

Connections come from Airflow (its database, environment variables or a secrets backend) through
the same hooks the operators use, so a connection means the same thing to a capacity back end
as to a task: a Kubernetes connection is read by the cncf-kubernetes provider's hooks, and
passwords are registered with the secrets masker before any client sees them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook
from airflow.sdk.log import mask_secret

from nuro_ml.clients.connections import ConnectionFields

if TYPE_CHECKING:
    from airflow.sdk import Connection
    from kubernetes.client import ApiClient
    from kubernetes_asyncio.client import ApiClient as AsyncApiClient

    from nuro_ml.clients.kubernetes import KubeAccess


def _fields(conn: Connection) -> ConnectionFields:
    if conn.password:
        mask_secret(conn.password)
    return ConnectionFields(
        conn_id=conn.conn_id,
        conn_type=conn.conn_type,
        host=conn.host,
        port=conn.port,
        schema=conn.schema,
        login=conn.login,
        password=conn.password,
        extra=dict(conn.extra_dejson),
    )


class AirflowConnections:
    """Resolve connection ids with Airflow (the default resolver of the engine clients)."""

    def connection(self, conn_id: str) -> ConnectionFields:
        return _fields(BaseHook.get_connection(conn_id))

    async def aconnection(self, conn_id: str) -> ConnectionFields:
        return _fields(await BaseHook.aget_connection(conn_id))

    def kubernetes_api_client(self, access: KubeAccess) -> ApiClient:
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

        hook = KubernetesHook(
            conn_id=access.conn_id,
            config_file=access.config_file,
            cluster_context=access.cluster_context,
            in_cluster=access.in_cluster,
        )
        api_client: Any = hook.api_client
        return api_client  # type: ignore[no-any-return]

    @asynccontextmanager
    async def kubernetes_async_api_client(self, access: KubeAccess) -> AsyncIterator[AsyncApiClient]:
        from nuro_ml.hooks.kuberay import AsyncKubernetesConfigHook

        hook = AsyncKubernetesConfigHook(
            conn_id=access.conn_id,
            config_file=access.config_file,
            cluster_context=access.cluster_context,
            in_cluster=access.in_cluster,
        )
        async with hook.get_conn() as api_client:
            yield api_client
