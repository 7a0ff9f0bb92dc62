"""Hooks for the Ray Jobs API (a Ray head's dashboard address), sync and async.

:class:`RayHook` wraps :class:`~nuro_ml.clients.ray.RayJobsClient` (Ray's own
``JobSubmissionClient``) for operators; :class:`AsyncRayHook` wraps
:class:`~nuro_ml.clients.ray.AsyncRayJobsClient` (aiohttp) so that triggers never block the
triggerer's event loop. The hooks add the Airflow connection and secrets masking; both return the
typed :class:`RayJobInfo` / :class:`RayJobStatus`, never raw dicts.

Connection type ``ray``: ``host`` is the dashboard/Jobs API address (``http://head:8265``, or a bare
host with ``port`` and ``schema`` ``https``), extras ``headers`` (a JSON object sent with every
request, e.g. an ``Authorization`` header; secret, masked in logs) and ``verify`` (TLS verification:
``true``/``false`` or a CA bundle path). Arguments given to the hook beat the connection.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from nuro_ml.clients.ray import (
    AsyncRayJobsClient,
    RayJobInfo,
    RayJobsClient,
    RayJobStatus,
    job_dashboard_url,
    normalize_address,
)
from nuro_ml.exceptions import RayJobError

if TYPE_CHECKING:
    from airflow.sdk import Connection
    from ray.job_submission import JobSubmissionClient


def _parse_headers(raw: Any, *, conn_id: str | None) -> dict[str, str]:
    if raw in (None, ""):
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as err:
            raise RayJobError(f"connection {conn_id!r}: extra 'headers' is not JSON ({err})") from None
    if not isinstance(raw, Mapping):
        raise RayJobError(
            f"connection {conn_id!r}: extra 'headers' must be a JSON object, got {type(raw).__name__}"
        )
    return {str(k): str(v) for k, v in raw.items()}


def _parse_verify(raw: Any, *, conn_id: str | None) -> bool | str:
    if raw is None or raw == "":
        return True
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        lowered = raw.strip().lower()
        if lowered in {"true", "1", "yes"}:
            return True
        if lowered in {"false", "0", "no"}:
            return False
        return raw
    raise RayJobError(
        f"connection {conn_id!r}: extra 'verify' must be true/false or a CA bundle path, got {raw!r}"
    )


class RayHookProtocol(Protocol):
    """What :class:`~nuro_ml.operators.ray.RayJobOperator` needs from a hook (another cluster type fits)."""

    @property
    def address(self) -> str: ...

    def job_url(self, submission_id: str) -> str: ...

    def submit_job(
        self,
        *,
        entrypoint: str,
        submission_id: str,
        runtime_env: dict[str, Any] | None = None,
        metadata: dict[str, str] | None = None,
        entrypoint_num_cpus: float | None = None,
        entrypoint_num_gpus: float | None = None,
        entrypoint_memory: int | None = None,
        entrypoint_resources: dict[str, float] | None = None,
        entrypoint_label_selector: dict[str, str] | None = None,
    ) -> str: ...

    def get_job_info(self, submission_id: str) -> RayJobInfo: ...

    def find_job(self, submission_id: str) -> RayJobInfo | None: ...

    def get_job_logs(self, submission_id: str) -> str: ...

    def stop_job(self, submission_id: str) -> bool: ...


class _RayConnectionMixin:
    """Resolution of address, headers and verify shared by the sync and async hooks."""

    conn_name_attr = "ray_conn_id"
    default_conn_name = "ray_default"
    conn_type = "ray"
    hook_name = "Ray"

    ray_conn_id: str | None
    _address_arg: str | None
    _headers_arg: dict[str, str] | None
    _verify_arg: bool | str | None

    def _needs_connection(self) -> bool:
        """An explicit address may stand alone: the connection is optional then (a missing one is fine)."""
        return bool(self.ray_conn_id) and not (
            self._address_arg and self._headers_arg is not None and self._verify_arg is not None
        )

    def _settings_from(self, conn: Connection | None) -> tuple[str, dict[str, str], bool | str]:
        extras: dict[str, Any] = {}
        if conn is not None and conn.extra:
            extras = json.loads(conn.extra) if isinstance(conn.extra, str) else dict(conn.extra)
        if self._address_arg:
            address = normalize_address(self._address_arg)
        elif conn is not None and conn.host:
            address = normalize_address(conn.host, port=conn.port, scheme=conn.schema)
        else:
            raise RayJobError(
                f"no Ray dashboard address: connection {self.ray_conn_id!r} has no host "
                "and no address= was given"
            )
        headers = (
            dict(self._headers_arg)
            if self._headers_arg is not None
            else _parse_headers(extras.get("headers"), conn_id=self.ray_conn_id)
        )
        verify = (
            self._verify_arg
            if self._verify_arg is not None
            else _parse_verify(extras.get("verify"), conn_id=self.ray_conn_id)
        )
        return address, headers, verify


class RayHook(_RayConnectionMixin, BaseHook):
    """Submit, inspect and stop Ray jobs through a Ray head's Jobs API.

    .. seealso:: :ref:`howto/connection:ray`

    :param ray_conn_id: Airflow connection of type ``ray``; None to use ``address`` alone.
    :param address: Dashboard/Jobs API address (``http://127.0.0.1:8265``); beats the connection's host.
    :param headers: HTTP headers for every request; beat the connection's ``headers`` extra.
    :param verify: TLS verification (bool or CA bundle path); beats the connection's ``verify`` extra.
    """

    def __init__(
        self,
        ray_conn_id: str | None = _RayConnectionMixin.default_conn_name,
        *,
        address: str | None = None,
        headers: dict[str, str] | None = None,
        verify: bool | str | None = None,
    ) -> None:
        super().__init__()
        self.ray_conn_id = ray_conn_id
        self._address_arg = address
        self._headers_arg = headers
        self._verify_arg = verify

    @cached_property
    def _settings(self) -> tuple[str, dict[str, str], bool | str]:
        from airflow.sdk.log import mask_secret

        conn = None
        if self._needs_connection():
            try:
                conn = self.get_connection(self.ray_conn_id)  # type: ignore[arg-type]
            except AirflowNotFoundException:
                if not self._address_arg:
                    raise
        address, headers, verify = self._settings_from(conn)
        for value in headers.values():
            mask_secret(value)
        return address, headers, verify

    @property
    def address(self) -> str:
        """Base URL of the Jobs API / dashboard."""
        return self._settings[0]

    def job_url(self, submission_id: str) -> str:
        """Dashboard page of the job, for the task's extra link."""
        return job_dashboard_url(self.address, submission_id)

    @cached_property
    def jobs_client(self) -> RayJobsClient:
        """The plain Jobs API client, built from the connection (no request is made yet)."""
        address, headers, verify = self._settings
        return RayJobsClient(address, headers=headers, verify=verify)

    @property
    def client(self) -> JobSubmissionClient:
        """Ray's client; constructing it checks the server is reachable and speaks Jobs API >= 2.0."""
        return self.jobs_client.client

    def get_conn(self) -> JobSubmissionClient:
        return self.client

    def submit_job(
        self,
        *,
        entrypoint: str,
        submission_id: str,
        runtime_env: dict[str, Any] | None = None,
        metadata: dict[str, str] | None = None,
        entrypoint_num_cpus: float | None = None,
        entrypoint_num_gpus: float | None = None,
        entrypoint_memory: int | None = None,
        entrypoint_resources: dict[str, float] | None = None,
        entrypoint_label_selector: dict[str, str] | None = None,
    ) -> str:
        """Submit a job under ``submission_id``; see :meth:`RayJobsClient.submit_job`."""
        return self.jobs_client.submit_job(
            entrypoint=entrypoint,
            submission_id=submission_id,
            runtime_env=runtime_env,
            metadata=metadata,
            entrypoint_num_cpus=entrypoint_num_cpus,
            entrypoint_num_gpus=entrypoint_num_gpus,
            entrypoint_memory=entrypoint_memory,
            entrypoint_resources=entrypoint_resources,
            entrypoint_label_selector=entrypoint_label_selector,
        )

    def get_job_info(self, submission_id: str) -> RayJobInfo:
        """:raises RayJobNotFoundError: no such job."""
        return self.jobs_client.get_job_info(submission_id)

    def find_job(self, submission_id: str) -> RayJobInfo | None:
        """The job, or None if the cluster has never seen that submission id."""
        return self.jobs_client.find_job(submission_id)

    def get_job_status(self, submission_id: str) -> RayJobStatus:
        return self.jobs_client.get_job_status(submission_id)

    def get_job_logs(self, submission_id: str) -> str:
        """Everything the job's driver wrote to stdout/stderr so far."""
        return self.jobs_client.get_job_logs(submission_id)

    def stop_job(self, submission_id: str) -> bool:
        """Ask Ray to stop the job (SIGTERM, then SIGKILL); False if it had already ended."""
        return self.jobs_client.stop_job(submission_id)

    def list_jobs(self) -> list[RayJobInfo]:
        """Every submitted job the cluster knows (driver-only jobs without a submission id are skipped)."""
        return self.jobs_client.list_jobs()

    def test_connection(self) -> tuple[bool, str]:
        try:
            version = self.jobs_client.get_version()
        except Exception as err:
            return False, str(err)
        return True, f"Ray Jobs API at {self.address} (version {version})"


class AsyncRayHook(_RayConnectionMixin, BaseHook):
    """Async twin of :class:`RayHook` for triggers: aiohttp against the Jobs REST API.

    Use :meth:`session` to share one HTTP connection pool across several calls::

        async with hook.session():
            info = await hook.get_job_info(submission_id)

    :param ray_conn_id: Airflow connection of type ``ray``; None to use ``address`` alone.
    :param address: Dashboard/Jobs API address; beats the connection's host.
    :param headers: HTTP headers for every request; beat the connection's ``headers`` extra.
    :param verify: TLS verification (bool or CA bundle path); beats the connection's ``verify`` extra.
    :param request_timeout: Seconds allowed for each HTTP request.
    """

    def __init__(
        self,
        ray_conn_id: str | None = _RayConnectionMixin.default_conn_name,
        *,
        address: str | None = None,
        headers: dict[str, str] | None = None,
        verify: bool | str | None = None,
        request_timeout: float = 30.0,
    ) -> None:
        super().__init__()
        self.ray_conn_id = ray_conn_id
        self._address_arg = address
        self._headers_arg = headers
        self._verify_arg = verify
        self.request_timeout = request_timeout
        self._client: AsyncRayJobsClient | None = None

    async def jobs_client(self) -> AsyncRayJobsClient:
        """The plain async Jobs API client, built from the connection once."""
        if self._client is None:
            from airflow.sdk.log import amask_secret

            conn = None
            if self._needs_connection():
                try:
                    conn = await self.aget_connection(self.ray_conn_id)  # type: ignore[arg-type]
                except AirflowNotFoundException:
                    if not self._address_arg:
                        raise
            address, headers, verify = self._settings_from(conn)
            for value in headers.values():
                await amask_secret(value)
            self._client = AsyncRayJobsClient(
                address, headers=headers, verify=verify, request_timeout=self.request_timeout
            )
        return self._client

    async def get_address(self) -> str:
        return (await self.jobs_client()).address

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncRayHook]:
        """Keep one aiohttp session open for the calls made inside the block."""
        async with (await self.jobs_client()).session():
            yield self

    async def get_job_info(self, submission_id: str) -> RayJobInfo:
        """:raises RayJobNotFoundError: no such job."""
        return await (await self.jobs_client()).get_job_info(submission_id)

    async def get_job_status(self, submission_id: str) -> RayJobStatus:
        return (await self.get_job_info(submission_id)).status

    async def get_job_logs(self, submission_id: str) -> str:
        return await (await self.jobs_client()).get_job_logs(submission_id)

    async def stop_job(self, submission_id: str) -> bool:
        return await (await self.jobs_client()).stop_job(submission_id)
