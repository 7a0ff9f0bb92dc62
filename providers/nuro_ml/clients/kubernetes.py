"""Kubernetes API client with no Airflow: nodes, pods and custom objects, sync and asyncio.

The API answers are read as JSON (``_preload_content=False``): listing thousands of pods does
not build thousands of model objects only to read a few fields. Failures raise
:class:`~nuro_ml.exceptions.KubernetesApiError` with the HTTP status in ``status_code``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kubernetes.client.exceptions import ApiException
from kubernetes.utils.quantity import parse_quantity
from kubernetes_asyncio.client.exceptions import ApiException as AsyncApiException

from nuro_ml.clients import connections
from nuro_ml.exceptions import KubernetesApiError

if TYPE_CHECKING:
    from decimal import Decimal

    from kubernetes.client import ApiClient
    from kubernetes_asyncio.client import ApiClient as AsyncApiClient

__all__ = [
    "AsyncKubernetesClient",
    "KubeAccess",
    "KubernetesClient",
    "delete_options",
    "parse_quantity_value",
]


@dataclass(frozen=True)
class KubeAccess:
    """How to reach a cluster: a named connection and/or kubeconfig settings that override it.

    Without ``conn_id`` the kubeconfig (``config_file``, default ``~/.kube/config``, and
    ``cluster_context``) or the pod's service account (``in_cluster``) is used directly.
    """

    conn_id: str | None = None
    config_file: str | None = None
    cluster_context: str | None = None
    in_cluster: bool | None = None


def parse_quantity_value(value: Any) -> Decimal:
    """A Kubernetes quantity (``"4"``, ``2``, ``"500m"``) as a number; raises ValueError/TypeError."""
    return parse_quantity(value)


def _status_body(body: Any) -> dict[str, Any]:
    """The API ``Status`` object of an error answer (``message``, ``reason``, ``details.causes``)."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    try:
        parsed = json.loads(body) if isinstance(body, str) else {}
    except ValueError:
        return {"message": str(body)}
    return parsed if isinstance(parsed, dict) else {}


def _api_error(err: ApiException | AsyncApiException, what: str) -> KubernetesApiError:
    status = _status_body(err.body)
    message = status.get("message") or err.reason or "no message"
    return KubernetesApiError(
        f"{what} failed (HTTP {err.status}): {message}", status_code=err.status, status=status
    )


def delete_options(grace_period_seconds: int | None = None, uid: str | None = None) -> dict[str, Any]:
    """DeleteOptions: background propagation, optional grace period and uid precondition."""
    body: dict[str, Any] = {"propagationPolicy": "Background"}
    if grace_period_seconds is not None:
        body["gracePeriodSeconds"] = grace_period_seconds
    if uid:
        body["preconditions"] = {"uid": uid}
    return body


def _decode(raw: bytes | str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(raw)
    return data


async def _read_items(response: Any, what: str) -> list[dict[str, Any]]:
    # kubernetes_asyncio checks the status only when it builds models; the raw response of a
    # refused request is an API ``Status`` object that must not pass for an empty list.
    body = await response.read()
    if not 200 <= response.status <= 299:
        status = _decode(body) if body else {}
        reason = status.get("message") or getattr(response, "reason", None) or "no message"
        raise KubernetesApiError(
            f"{what} failed (HTTP {response.status}): {reason}", status_code=response.status
        )
    return _decode(body).get("items") or []


class KubernetesClient:
    """Blocking reads of nodes, pods and cluster-scoped custom objects.

    :param api_client: the ``kubernetes`` package's API client (see :meth:`connect`).
    """

    def __init__(self, api_client: ApiClient) -> None:
        self.api_client = api_client

    @classmethod
    def connect(cls, access: KubeAccess) -> KubernetesClient:
        """A client for ``access``: the named connection through the resolver, else the kubeconfig."""
        if access.conn_id:
            return cls(connections.resolver().kubernetes_api_client(access))
        from kubernetes import client, config

        if access.in_cluster:
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            return cls(client.ApiClient(configuration))
        return cls(
            config.new_client_from_config(config_file=access.config_file, context=access.cluster_context)
        )

    def list_nodes(self, *, label_selector: str = "") -> list[dict[str, Any]]:
        """Every node matching ``label_selector``, as the API's JSON."""
        from kubernetes.client import CoreV1Api

        try:
            raw = CoreV1Api(self.api_client).list_node(label_selector=label_selector, _preload_content=False)
        except ApiException as err:
            raise _api_error(err, "listing nodes") from err
        return _decode(raw.data).get("items") or []

    def list_pods(self, *, field_selector: str = "") -> list[dict[str, Any]]:
        """Pods of every namespace matching ``field_selector``, as the API's JSON."""
        from kubernetes.client import CoreV1Api

        try:
            raw = CoreV1Api(self.api_client).list_pod_for_all_namespaces(
                field_selector=field_selector, _preload_content=False
            )
        except ApiException as err:
            raise _api_error(err, "listing pods") from err
        return _decode(raw.data).get("items") or []

    def list_cluster_custom_objects(self, group: str, version: str, plural: str) -> list[dict[str, Any]]:
        """Every cluster-scoped ``plural.group/version`` object."""
        from kubernetes.client import CustomObjectsApi

        try:
            listed = CustomObjectsApi(self.api_client).list_cluster_custom_object(group, version, plural)
        except ApiException as err:
            raise _api_error(err, f"listing {plural}.{group}") from err
        return list(listed.get("items") or [])

    def create_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """Create the object; the API's answer (the stored object) is returned."""
        from kubernetes.client import CustomObjectsApi

        try:
            created: dict[str, Any] = CustomObjectsApi(self.api_client).create_namespaced_custom_object(
                group=group, version=version, namespace=namespace, plural=plural, body=body
            )
        except ApiException as err:
            raise _api_error(err, f"creating {plural}.{group} in {namespace}") from err
        return created

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str
    ) -> dict[str, Any] | None:
        """The object, or None when it does not exist (HTTP 404)."""
        from kubernetes.client import CustomObjectsApi

        try:
            obj: dict[str, Any] = CustomObjectsApi(self.api_client).get_namespaced_custom_object(
                group=group, version=version, namespace=namespace, plural=plural, name=name
            )
        except ApiException as err:
            if err.status == 404:
                return None
            raise _api_error(err, f"reading {plural}.{group} {namespace}/{name}") from err
        return obj

    def delete_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: dict[str, Any]
    ) -> None:
        """Delete the object with ``body`` as its DeleteOptions (see :func:`delete_options`)."""
        from kubernetes.client import CustomObjectsApi

        try:
            CustomObjectsApi(self.api_client).delete_namespaced_custom_object(
                group=group, version=version, namespace=namespace, plural=plural, name=name, body=body
            )
        except ApiException as err:
            raise _api_error(err, f"deleting {plural}.{group} {namespace}/{name}") from err


class AsyncKubernetesClient:
    """Asyncio twin of :class:`KubernetesClient`, on ``kubernetes_asyncio``.

    :param api_client: the ``kubernetes_asyncio`` API client (see :meth:`connect`).
    """

    def __init__(self, api_client: AsyncApiClient) -> None:
        self.api_client = api_client

    @classmethod
    @asynccontextmanager
    async def connect(cls, access: KubeAccess) -> AsyncIterator[AsyncKubernetesClient]:
        """A client for ``access`` whose HTTP session is closed when the block ends."""
        if access.conn_id:
            async with connections.resolver().kubernetes_async_api_client(access) as api_client:
                yield cls(api_client)
            return
        from kubernetes_asyncio import client, config

        if access.in_cluster:
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            api_client = client.ApiClient(configuration)
        else:
            api_client = await config.new_client_from_config(
                config_file=access.config_file, context=access.cluster_context
            )
        async with api_client:
            yield cls(api_client)

    async def list_nodes(self, *, label_selector: str = "") -> list[dict[str, Any]]:
        from kubernetes_asyncio.client import CoreV1Api

        try:
            # With _preload_content=False the client returns the raw aiohttp response.
            response: Any = await CoreV1Api(self.api_client).list_node(
                label_selector=label_selector, _preload_content=False
            )
            return await _read_items(response, "listing nodes")
        except AsyncApiException as err:
            raise _api_error(err, "listing nodes") from err

    async def list_pods(self, *, field_selector: str = "") -> list[dict[str, Any]]:
        from kubernetes_asyncio.client import CoreV1Api

        try:
            response: Any = await CoreV1Api(self.api_client).list_pod_for_all_namespaces(
                field_selector=field_selector, _preload_content=False
            )
            return await _read_items(response, "listing pods")
        except AsyncApiException as err:
            raise _api_error(err, "listing pods") from err

    async def list_cluster_custom_objects(
        self, group: str, version: str, plural: str
    ) -> list[dict[str, Any]]:
        from kubernetes_asyncio.client import CustomObjectsApi

        try:
            listed = await CustomObjectsApi(self.api_client).list_cluster_custom_object(
                group, version, plural
            )
        except AsyncApiException as err:
            raise _api_error(err, f"listing {plural}.{group}") from err
        return list(listed.get("items") or [])

    async def list_namespaced_custom_objects(
        self, group: str, version: str, namespace: str, plural: str, *, label_selector: str = ""
    ) -> list[dict[str, Any]]:
        """The objects of ``plural`` in ``namespace`` matching ``label_selector``."""
        from kubernetes_asyncio.client import CustomObjectsApi

        try:
            listed = await CustomObjectsApi(self.api_client).list_namespaced_custom_object(
                group, version, namespace, plural, label_selector=label_selector
            )
        except AsyncApiException as err:
            raise _api_error(err, f"listing {plural}.{group} in {namespace}") from err
        return list(listed.get("items") or [])

    async def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str
    ) -> dict[str, Any] | None:
        """The object, or None when it does not exist (HTTP 404)."""
        from kubernetes_asyncio.client import CustomObjectsApi

        try:
            obj: dict[str, Any] = await CustomObjectsApi(self.api_client).get_namespaced_custom_object(
                group=group, version=version, namespace=namespace, plural=plural, name=name
            )
        except AsyncApiException as err:
            if err.status == 404:
                return None
            raise _api_error(err, f"reading {plural}.{group} {namespace}/{name}") from err
        return obj

    async def delete_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: dict[str, Any]
    ) -> None:
        """Delete the object with ``body`` as its DeleteOptions (see :func:`delete_options`)."""
        from kubernetes_asyncio.client import CustomObjectsApi

        # The client sends a dict body as it is, like the sync client; only its stubs insist on
        # the model class.
        options: Any = body
        try:
            await CustomObjectsApi(self.api_client).delete_namespaced_custom_object(
                group=group, version=version, namespace=namespace, plural=plural, name=name, body=options
            )
        except AsyncApiException as err:
            raise _api_error(err, f"deleting {plural}.{group} {namespace}/{name}") from err
