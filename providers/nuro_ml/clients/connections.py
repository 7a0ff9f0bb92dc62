"""Named connections for the engine clients, resolved by whoever runs the code.

A library names a connection (a back end's ``kubernetes_conn_id``, ``aws_conn_id``, Slurm
``conn_id``) and asks :func:`resolver` for what the client needs. Under Airflow that is
:class:`nuro_ml.hooks.connections.AirflowConnections`, which reads Airflow connections and
secrets backends through the hooks. It is found by its dotted path the first time a connection
is needed, the way Airflow's providers manager finds a connection type's hook class, so
importing a library never imports Airflow. Elsewhere (a script, the simulator, a test),
:func:`set_resolver` installs another one; code that passes no connection id needs none.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from nuro_ml.exceptions import NuroMLException

if TYPE_CHECKING:
    from kubernetes.client import ApiClient
    from kubernetes_asyncio.client import ApiClient as AsyncApiClient

    from nuro_ml.clients.kubernetes import KubeAccess

#: The resolver used when none was set: Airflow's connections, through the hooks.
DEFAULT_RESOLVER = "nuro_ml.hooks.connections.AirflowConnections"


@dataclass(frozen=True)
class ConnectionFields:
    """The fields of one connection, as a client reads them (an Airflow ``Connection`` has them all)."""

    conn_id: str
    conn_type: str | None = None
    host: str | None = None
    port: int | None = None
    schema: str | None = None
    login: str | None = None
    password: str | None = field(default=None, repr=False)
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def extra_dejson(self) -> dict[str, Any]:
        """The extras as a dict (the name an Airflow ``Connection`` gives them)."""
        return dict(self.extra)


class ConnectionResolver(Protocol):
    """Where named connections come from."""

    def connection(self, conn_id: str) -> ConnectionFields:
        """The connection's fields; raises when there is no such connection."""
        ...

    async def aconnection(self, conn_id: str) -> ConnectionFields:
        """:meth:`connection` for an event loop."""
        ...

    def kubernetes_api_client(self, access: KubeAccess) -> ApiClient:
        """A Kubernetes API client for ``access.conn_id``, with ``access``'s overrides applied."""
        ...

    def kubernetes_async_api_client(self, access: KubeAccess) -> AbstractAsyncContextManager[AsyncApiClient]:
        """An asyncio Kubernetes API client for ``access.conn_id``, closed when the block ends."""
        ...


_resolver: ConnectionResolver | None = None


def set_resolver(value: ConnectionResolver | None) -> None:
    """Use ``value`` for every named connection from now on; None goes back to the default."""
    global _resolver
    _resolver = value


def resolver() -> ConnectionResolver:
    """The resolver set with :func:`set_resolver`, else Airflow's connections.

    :raises NuroMLException: no resolver was set and Airflow is not importable here.
    """
    global _resolver
    if _resolver is None:
        module_name, _, class_name = DEFAULT_RESOLVER.rpartition(".")
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise NuroMLException(
                f"a connection id was given but connections cannot be resolved here ({err}); "
                "run under Airflow, call nuro_ml.clients.connections.set_resolver(), or configure "
                "the client without a connection id"
            ) from err
        _resolver = getattr(module, class_name)()
    return _resolver
