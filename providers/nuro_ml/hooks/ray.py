"""Hooks for the Ray Jobs API (a Ray head's dashboard address), sync and async.

:class:`RayHook` wraps Ray's own ``JobSubmissionClient`` for operators; :class:`AsyncRayHook` talks
to the same REST endpoints (``/api/jobs/<id>``, ``/api/jobs/<id>/logs``, ``/api/jobs/<id>/stop``)
with aiohttp so that triggers never block the triggerer's event loop. Both return the typed
:class:`RayJobInfo` / :class:`RayJobStatus` defined here, never raw dicts.

Connection type ``ray``: ``host`` is the dashboard/Jobs API address (``http://head:8265``, or a bare
host with ``port`` and ``schema`` ``https``), extras ``headers`` (a JSON object sent with every
request, e.g. an ``Authorization`` header; secret, masked in logs) and ``verify`` (TLS verification:
``true``/``false`` or a CA bundle path). Arguments given to the hook beat the connection.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from nuro_ml.exceptions import RayJobError, RayJobNotFoundError

if TYPE_CHECKING:
    import aiohttp
    from airflow.sdk import Connection
    from ray.job_submission import JobSubmissionClient


class RayJobStatus(StrEnum):
    """Status of a Ray job as the Jobs API reports it (same values as ``ray.job_submission.JobStatus``)."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"

    def is_terminal(self) -> bool:
        """A job in a terminal state never changes status again."""
        return self in {RayJobStatus.STOPPED, RayJobStatus.SUCCEEDED, RayJobStatus.FAILED}

    def is_unsuccessful_end(self) -> bool:
        """Ended without succeeding: a retry has to submit a new job."""
        return self in {RayJobStatus.STOPPED, RayJobStatus.FAILED}


_DEFAULT_MESSAGES = {
    RayJobStatus.PENDING: "Job has not started yet.",
    RayJobStatus.RUNNING: "Job is currently running.",
    RayJobStatus.STOPPED: "Job was intentionally stopped.",
    RayJobStatus.SUCCEEDED: "Job finished successfully.",
    RayJobStatus.FAILED: "Job failed.",
}


@dataclass
class RayJobInfo:
    """One submitted Ray job, as ``GET /api/jobs/<submission_id>`` describes it."""

    #: The id the job was submitted under (ours are derived from the Airflow task instance).
    submission_id: str
    status: RayJobStatus
    #: Shell command the job runs.
    entrypoint: str = ""
    #: Human-readable detail; for failures Ray puts the exit code and the last log lines here.
    message: str | None = None
    #: Ray's classification of a failure (``JOB_ENTRYPOINT_COMMAND_ERROR``, ``RUNTIME_ENV_SETUP_FAILURE``...).
    error_type: str | None = None
    #: Milliseconds since the epoch.
    start_time: int | None = None
    end_time: int | None = None
    #: Free-form string metadata given at submission (we record the Airflow task instance here).
    metadata: dict[str, str] = field(default_factory=dict)
    #: Ray's internal job id (hex), set once the driver started.
    job_id: str | None = None
    driver_exit_code: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.status, RayJobStatus):
            self.status = RayJobStatus(str(self.status))
        if self.message is None:
            self.message = _DEFAULT_MESSAGES[self.status]
        self.metadata = {str(k): str(v) for k, v in (self.metadata or {}).items()}

    @classmethod
    def from_api(cls, payload: Mapping[str, Any]) -> RayJobInfo:
        """Build from the Jobs API JSON (also accepts Ray's ``JobDetails`` model dumped to a dict)."""
        submission_id = payload.get("submission_id") or payload.get("job_id")
        if not submission_id:
            raise RayJobError(f"Ray Jobs API returned a job without submission_id: {sorted(payload)}")
        return cls(
            submission_id=str(submission_id),
            status=RayJobStatus(str(payload["status"])),
            entrypoint=str(payload.get("entrypoint") or ""),
            message=payload.get("message"),
            error_type=payload.get("error_type"),
            start_time=payload.get("start_time"),
            end_time=payload.get("end_time"),
            metadata=dict(payload.get("metadata") or {}),
            job_id=payload.get("job_id"),
            driver_exit_code=payload.get("driver_exit_code"),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the status as its string value), e.g. for trigger events."""
        data = asdict(self)
        data["status"] = self.status.value
        return data


def normalize_address(address: str, *, port: int | None = None, scheme: str | None = None) -> str:
    """``http(s)://host[:port]`` without a trailing slash, from a full URL or a bare host."""
    address = address.strip().rstrip("/")
    if not address:
        raise RayJobError("Ray dashboard address is empty; set the connection's host or pass address=")
    if "://" in address:
        return address
    chosen = "https" if (scheme or "").lower() == "https" else "http"
    host = f"{address}:{port}" if port and ":" not in address else address
    return f"{chosen}://{host}"


def job_dashboard_url(address: str, submission_id: str) -> str:
    """The Ray dashboard page of one job."""
    return f"{address}/#/jobs/{quote(submission_id, safe='')}"


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


def _not_found(submission_id: str, address: str) -> RayJobNotFoundError:
    return RayJobNotFoundError(f"Ray job {submission_id!r} does not exist on {address}")


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
    def client(self) -> JobSubmissionClient:
        """Ray's client; constructing it checks the server is reachable and speaks Jobs API >= 2.0."""
        from ray.job_submission import JobSubmissionClient

        address, headers, verify = self._settings
        try:
            return JobSubmissionClient(address, headers=headers or None, verify=verify)
        except (ConnectionError, RuntimeError) as err:
            raise RayJobError(f"cannot reach the Ray Jobs API at {address}: {err}") from err

    def get_conn(self) -> JobSubmissionClient:
        return self.client

    def _call(self, action: str, job: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RuntimeError as err:
            text = str(err)
            if "status code 404" in text or "does not exist" in text:
                raise _not_found(job, self.address) from err
            raise RayJobError(f"failed to {action} Ray job {job!r} on {self.address}: {text}") from err

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
        """Submit a job under ``submission_id`` (a local ``working_dir`` is uploaded first).

        ``entrypoint_label_selector`` places the entrypoint on nodes with those Ray labels
        (e.g. ``{"ray.io/node-id": "in(id1,id2)"}``: the nodes of a GPU lease).

        :raises RayJobError: the server refused it, e.g. because the id is taken
            (:meth:`find_job` tells whether it is).
        """
        result = self._call(
            "submit",
            submission_id,
            self.client.submit_job,
            entrypoint=entrypoint,
            submission_id=submission_id,
            runtime_env=runtime_env,
            metadata=metadata,
            entrypoint_num_cpus=entrypoint_num_cpus,
            entrypoint_num_gpus=entrypoint_num_gpus,
            entrypoint_memory=entrypoint_memory,
            entrypoint_resources=entrypoint_resources,
            **({"entrypoint_label_selector": entrypoint_label_selector} if entrypoint_label_selector else {}),
        )
        return str(result)

    def get_job_info(self, submission_id: str) -> RayJobInfo:
        """:raises RayJobNotFoundError: no such job."""
        details = self._call("get", submission_id, self.client.get_job_info, submission_id)
        return RayJobInfo.from_api(details.model_dump() if hasattr(details, "model_dump") else dict(details))

    def find_job(self, submission_id: str) -> RayJobInfo | None:
        """The job, or None if the cluster has never seen that submission id."""
        try:
            return self.get_job_info(submission_id)
        except RayJobNotFoundError:
            return None

    def get_job_status(self, submission_id: str) -> RayJobStatus:
        return self.get_job_info(submission_id).status

    def get_job_logs(self, submission_id: str) -> str:
        """Everything the job's driver wrote to stdout/stderr so far."""
        return str(self._call("get logs of", submission_id, self.client.get_job_logs, submission_id))

    def stop_job(self, submission_id: str) -> bool:
        """Ask Ray to stop the job (SIGTERM, then SIGKILL); False if it had already ended."""
        return bool(self._call("stop", submission_id, self.client.stop_job, submission_id))

    def list_jobs(self) -> list[RayJobInfo]:
        """Every submitted job the cluster knows (driver-only jobs without a submission id are skipped)."""
        try:
            jobs = self.client.list_jobs()
        except RuntimeError as err:
            raise RayJobError(f"failed to list Ray jobs on {self.address}: {err}") from err
        infos = []
        for details in jobs:
            payload = details.model_dump() if hasattr(details, "model_dump") else dict(details)
            if payload.get("submission_id"):
                infos.append(RayJobInfo.from_api(payload))
        return infos

    def test_connection(self) -> tuple[bool, str]:
        try:
            version = self.client.get_version()
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
        self._resolved: tuple[str, dict[str, str], bool | str] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ssl: ssl.SSLContext | bool = True

    async def _get_settings(self) -> tuple[str, dict[str, str], bool | str]:
        if self._resolved is None:
            from airflow.sdk.log import amask_secret

            conn = None
            if self._needs_connection():
                try:
                    conn = await self.aget_connection(self.ray_conn_id)  # type: ignore[arg-type]
                except AirflowNotFoundException:
                    if not self._address_arg:
                        raise
            resolved = self._settings_from(conn)
            for value in resolved[1].values():
                await amask_secret(value)
            verify = resolved[2]
            if isinstance(verify, str):
                # Reading the CA bundle touches the disk: keep it off the event loop.
                self._ssl = await asyncio.to_thread(ssl.create_default_context, cafile=verify)
            else:
                self._ssl = verify
            self._resolved = resolved
        return self._resolved

    async def get_address(self) -> str:
        return (await self._get_settings())[0]

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncRayHook]:
        """Keep one aiohttp session open for the calls made inside the block."""
        import aiohttp

        _, headers, _ = await self._get_settings()
        if self._session is not None:
            yield self
            return
        timeout = aiohttp.ClientTimeout(total=self.request_timeout)
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
            self._session = session
            try:
                yield self
            finally:
                self._session = None

    async def _request(self, method: str, path: str, *, action: str, submission_id: str) -> Any:
        address, _, _ = await self._get_settings()
        async with self.session():
            assert self._session is not None
            url = f"{address}{path}"
            try:
                async with self._session.request(method, url, ssl=self._ssl) as response:
                    body = await response.text()
                    status = response.status
            except (TimeoutError, OSError) as err:
                raise RayJobError(
                    f"failed to {action} Ray job {submission_id!r} on {address}: {err!r}"
                ) from err
        if status == 404:
            raise _not_found(submission_id, address)
        if status != 200:
            raise RayJobError(
                f"failed to {action} Ray job {submission_id!r} on {address}: HTTP {status}: {body[:500]}"
            )
        try:
            return json.loads(body)
        except ValueError as err:
            raise RayJobError(f"{url} returned non-JSON ({err}): {body[:200]}") from err

    async def get_job_info(self, submission_id: str) -> RayJobInfo:
        """:raises RayJobNotFoundError: no such job."""
        payload = await self._request(
            "GET", f"/api/jobs/{quote(submission_id, safe='')}", action="get", submission_id=submission_id
        )
        return RayJobInfo.from_api(payload)

    async def get_job_status(self, submission_id: str) -> RayJobStatus:
        return (await self.get_job_info(submission_id)).status

    async def get_job_logs(self, submission_id: str) -> str:
        payload = await self._request(
            "GET",
            f"/api/jobs/{quote(submission_id, safe='')}/logs",
            action="get logs of",
            submission_id=submission_id,
        )
        return str(payload.get("logs", ""))

    async def stop_job(self, submission_id: str) -> bool:
        payload = await self._request(
            "POST",
            f"/api/jobs/{quote(submission_id, safe='')}/stop",
            action="stop",
            submission_id=submission_id,
        )
        return bool(payload.get("stopped", False))
