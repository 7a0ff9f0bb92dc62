"""Ray clients with no Airflow: the Jobs API (sync and async) and the dashboard's cluster status.

:class:`RayJobsClient` is Ray's own ``JobSubmissionClient`` with typed answers
(:class:`RayJobInfo`, :class:`RayJobStatus`) and errors that carry the HTTP status;
:class:`AsyncRayJobsClient` speaks the same REST endpoints (``/api/jobs/<id>``,
``/api/jobs/<id>/logs``, ``/api/jobs/<id>/stop``) with aiohttp, for event loops that must not
block. :func:`cluster_resource_usage` and :func:`gcs_cluster_status` read what a cluster holds
without connecting a driver to it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from nuro_ml.exceptions import CapacityError, RayJobError, RayJobNotFoundError

if TYPE_CHECKING:
    import aiohttp
    from ray.autoscaler.v2.schema import ClusterStatus
    from ray.job_submission import JobSubmissionClient

_T = TypeVar("_T")

#: The dashboard's autoscaler report (``format=0``: JSON, not the text table).
CLUSTER_STATUS_PATH = "/api/cluster_status?format=0"


class RayJobStatus(StrEnum):
    """Status of a Ray job (values of ``ray.job_submission.JobStatus``).

    ``NEW`` (the empty string) is KubeRay's ``JobStatusNew``: a RayJob whose Ray job has not
    been submitted yet. The Jobs API itself never reports it.
    """

    NEW = ""
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
    RayJobStatus.NEW: "Job has not been submitted yet.",
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


def _job_error(action: str, submission_id: str, address: str, status: int | None, detail: str) -> RayJobError:
    """The provider error for a failed Jobs API call; 404 means the cluster never saw the id."""
    if status == 404:
        return RayJobNotFoundError(f"Ray job {submission_id!r} does not exist on {address}", status_code=404)
    where = f"HTTP {status}: " if status is not None else ""
    return RayJobError(
        f"failed to {action} Ray job {submission_id!r} on {address}: {where}{detail}", status_code=status
    )


class _RayApiError(RuntimeError):
    """What :class:`RayJobsClient`'s Ray client raises for a non-200 answer: the status, kept."""

    def __init__(self, status_code: int, text: str) -> None:
        super().__init__(f"Request failed with status code {status_code}: {text}.")
        self.status_code = status_code
        self.text = text


@functools.cache
def _submission_client_class() -> type[JobSubmissionClient]:
    # Ray's client reports every non-200 answer as a RuntimeError whose text holds the status;
    # its one error hook is overridden so that the status travels as a number. Ray is imported
    # here, not at module level: it takes seconds, and only job submission needs it.
    from ray.job_submission import JobSubmissionClient

    class _StatusKeepingClient(JobSubmissionClient):  # type: ignore[misc]
        def _raise_error(self, r: Any) -> None:
            raise _RayApiError(int(r.status_code), str(r.text)[:500])

    return _StatusKeepingClient


class RayJobsClient:
    """Submit, inspect and stop Ray jobs through a Ray head's Jobs API, anywhere (no Airflow).

    Example::

        client = RayJobsClient("http://127.0.0.1:8265")
        client.submit_job(entrypoint="python train.py", submission_id="train-1")
        client.get_job_info("train-1").status

    :param address: Dashboard/Jobs API address (``http://127.0.0.1:8265``, or a bare host).
    :param headers: HTTP headers sent with every request (e.g. ``Authorization``).
    :param verify: TLS verification: a bool, or the path of a CA bundle.
    """

    def __init__(
        self, address: str, *, headers: Mapping[str, str] | None = None, verify: bool | str = True
    ) -> None:
        self.address = normalize_address(address)
        self.headers = dict(headers or {})
        self.verify = verify
        self._client: JobSubmissionClient | None = None

    @property
    def client(self) -> JobSubmissionClient:
        """Ray's client; constructing it checks the server is reachable and speaks Jobs API >= 2.0."""
        if self._client is None:
            try:
                self._client = _submission_client_class()(
                    self.address, headers=self.headers or None, verify=self.verify
                )
            except _RayApiError as err:
                raise RayJobError(
                    f"cannot reach the Ray Jobs API at {self.address}: HTTP {err.status_code}: {err.text}",
                    status_code=err.status_code,
                ) from err
            except (ConnectionError, RuntimeError) as err:
                raise RayJobError(f"cannot reach the Ray Jobs API at {self.address}: {err}") from err
        return self._client

    def job_url(self, submission_id: str) -> str:
        """Dashboard page of the job."""
        return job_dashboard_url(self.address, submission_id)

    def _call(self, action: str, job: str, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        try:
            return fn(*args, **kwargs)
        except _RayApiError as err:
            raise _job_error(action, job, self.address, err.status_code, err.text) from err
        except (ConnectionError, RuntimeError) as err:
            # No answer at all (refused, reset, timed out): there is no status to go by.
            raise _job_error(action, job, self.address, None, str(err)) from err

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
        jobs = self._call("list", "*", self.client.list_jobs)
        infos = []
        for details in jobs:
            payload = details.model_dump() if hasattr(details, "model_dump") else dict(details)
            if payload.get("submission_id"):
                infos.append(RayJobInfo.from_api(payload))
        return infos

    def get_version(self) -> str:
        return str(self.client.get_version())


class AsyncRayJobsClient:
    """Async twin of :class:`RayJobsClient`: aiohttp against the Jobs REST API.

    Use :meth:`session` to share one HTTP connection pool across several calls::

        async with client.session():
            info = await client.get_job_info(submission_id)

    :param address: Dashboard/Jobs API address.
    :param headers: HTTP headers sent with every request.
    :param verify: TLS verification: a bool, or the path of a CA bundle.
    :param request_timeout: Seconds allowed for each HTTP request.
    """

    def __init__(
        self,
        address: str,
        *,
        headers: Mapping[str, str] | None = None,
        verify: bool | str = True,
        request_timeout: float = 30.0,
    ) -> None:
        self.address = normalize_address(address)
        self.headers = dict(headers or {})
        self.verify = verify
        self.request_timeout = request_timeout
        self._session: aiohttp.ClientSession | None = None
        self._ssl: ssl.SSLContext | bool | None = None

    async def _ssl_context(self) -> ssl.SSLContext | bool:
        if self._ssl is None:
            if isinstance(self.verify, str):
                # Reading the CA bundle touches the disk: keep it off the event loop.
                self._ssl = await asyncio.to_thread(ssl.create_default_context, cafile=self.verify)
            else:
                self._ssl = self.verify
        return self._ssl

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncRayJobsClient]:
        """Keep one aiohttp session open for the calls made inside the block."""
        import aiohttp

        if self._session is not None:
            yield self
            return
        timeout = aiohttp.ClientTimeout(total=self.request_timeout)
        async with aiohttp.ClientSession(headers=self.headers, timeout=timeout) as session:
            self._session = session
            try:
                yield self
            finally:
                self._session = None

    async def _request(self, method: str, path: str, *, action: str, submission_id: str) -> Any:
        ssl_context = await self._ssl_context()
        url = f"{self.address}{path}"
        async with self.session():
            assert self._session is not None
            try:
                async with self._session.request(method, url, ssl=ssl_context) as response:
                    body = await response.text()
                    status = response.status
            except (TimeoutError, OSError) as err:
                raise _job_error(action, submission_id, self.address, None, repr(err)) from err
        if status != 200:
            raise _job_error(action, submission_id, self.address, status, body[:500])
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


def cluster_resource_usage(address: str, resource: str, *, timeout: float) -> tuple[float, float]:
    """``(used, total)`` of one resource from the dashboard's ``/api/cluster_status``.

    One HTTP GET, no Ray import; the figures trail the cluster by the autoscaler monitor's
    update period (a few seconds).

    :raises CapacityError: the dashboard did not answer, or has no cluster status yet.
    """
    url = normalize_address(address) + CLUSTER_STATUS_PATH
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body: dict[str, Any] = json.load(response)
    except urllib.error.HTTPError as err:
        raise CapacityError(
            f"Ray dashboard {url} did not answer with cluster status: HTTP {err.code}", status_code=err.code
        ) from err
    except (urllib.error.URLError, TimeoutError, OSError, ValueError) as err:
        raise CapacityError(f"Ray dashboard {url} did not answer with cluster status: {err}") from err
    status = (body.get("data") or {}).get("clusterStatus")
    if not body.get("result") or not status:
        raise CapacityError(
            f"Ray dashboard {url} has no cluster status yet ({body.get('msg', 'no message')}); "
            "the autoscaler monitor may still be starting"
        )
    usage = (status.get("loadMetricsReport") or {}).get("usage") or {}
    used, total = usage.get(resource, (0.0, 0.0))
    return float(used), float(total)


def gcs_cluster_status(gcs_address: str, *, timeout: float) -> ClusterStatus:
    """The autoscaler v2 SDK's view of the cluster, asked of the GCS over gRPC (imports Ray, once).

    Current to the moment, with every node's resources; no driver joins the cluster.

    :raises CapacityError: Ray is missing or the GCS did not answer.
    """
    try:
        from ray.autoscaler.v2.sdk import get_cluster_status
    except ImportError as err:  # pragma: no cover - ray is a hard dependency
        raise CapacityError(f"Ray is not importable for GCS address {gcs_address}: {err}") from err
    try:
        return get_cluster_status(gcs_address, timeout=int(timeout))
    except Exception as err:
        raise CapacityError(f"Ray GCS at {gcs_address} did not return cluster status: {err}") from err
