"""The Ray clients without Airflow: typed answers, and errors that carry the HTTP status."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from nuro_ml.clients.ray import AsyncRayJobsClient, RayJobsClient, RayJobStatus, cluster_resource_usage
from nuro_ml.exceptions import (
    CapacityError,
    KubeRayJobError,
    RayJobError,
    RayJobNotFoundError,
    is_transient_status,
)
from nuro_ml.triggers.kuberay import _transient as kuberay_transient
from nuro_ml.triggers.ray import _transient as ray_transient

JOB = {
    "type": "SUBMISSION",
    "job_id": None,
    "submission_id": "train-1",
    "status": "RUNNING",
    "entrypoint": "python train.py",
    "message": None,
    "metadata": {"dag_id": "d"},
}

#: path -> (HTTP status, body) the stand-in Jobs API answers with.
ROUTES: dict[str, tuple[int, object]] = {
    "/api/version": (200, {"version": "4", "ray_version": "2.60.0", "ray_commit": "stand-in"}),
    "/api/jobs/train-1": (200, JOB),
    "/api/jobs/missing": (404, "Job missing does not exist"),
    # The text says 404 but the status is 503: decisions must follow the status.
    "/api/jobs/busy": (503, "upstream said HTTP 404 earlier"),
    "/api/jobs/bad": (400, "bad request"),
    "/api/cluster_status?format=0": (
        200,
        {"result": True, "data": {"clusterStatus": {"loadMetricsReport": {"usage": {"GPU": [3.0, 8.0]}}}}},
    ),
}


class _JobsApi(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        status, body = ROUTES.get(self.path, (404, "no route"))
        data = (json.dumps(body) if not isinstance(body, str) else body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if not isinstance(body, str) else "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = _answer
    do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def jobs_api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _JobsApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_sync_client_returns_typed_jobs_and_maps_404_to_not_found(jobs_api: str) -> None:
    client = RayJobsClient(jobs_api)
    info = client.get_job_info("train-1")
    assert (info.status, info.metadata) == (RayJobStatus.RUNNING, {"dag_id": "d"})
    assert client.find_job("missing") is None
    with pytest.raises(RayJobNotFoundError) as err:
        client.get_job_info("missing")
    assert err.value.status_code == 404


@pytest.mark.parametrize(("job", "status", "transient"), [("busy", 503, True), ("bad", 400, False)])
def test_sync_client_errors_carry_the_status(jobs_api: str, job: str, status: int, transient: bool) -> None:
    with pytest.raises(RayJobError) as err:
        RayJobsClient(jobs_api).get_job_info(job)
    assert not isinstance(err.value, RayJobNotFoundError)
    assert (err.value.status_code, err.value.is_transient) == (status, transient)
    assert ray_transient(err.value) is transient


@pytest.mark.parametrize(("job", "status", "transient"), [("busy", 503, True), ("bad", 400, False)])
async def test_async_client_errors_carry_the_status(
    jobs_api: str, job: str, status: int, transient: bool
) -> None:
    client = AsyncRayJobsClient(jobs_api)
    async with client.session():
        assert (await client.get_job_info("train-1")).submission_id == "train-1"
        with pytest.raises(RayJobNotFoundError):
            await client.get_job_info("missing")
        with pytest.raises(RayJobError) as err:
            await client.get_job_info(job)
    assert (err.value.status_code, ray_transient(err.value)) == (status, transient)


async def test_no_answer_has_no_status_and_is_retried() -> None:
    client = AsyncRayJobsClient("http://127.0.0.1:9", request_timeout=5)
    with pytest.raises(RayJobError) as err:
        await client.get_job_info("train-1")
    assert err.value.status_code is None
    assert ray_transient(err.value)


def test_dashboard_cluster_status_reads_used_and_total(jobs_api: str) -> None:
    assert cluster_resource_usage(jobs_api, "GPU", timeout=10) == (3.0, 8.0)
    assert cluster_resource_usage(jobs_api, "TPU", timeout=10) == (0.0, 0.0)
    with pytest.raises(CapacityError) as err:
        cluster_resource_usage(jobs_api + "/nowhere", "GPU", timeout=10)
    assert err.value.status_code == 404


@pytest.mark.parametrize(
    ("status", "transient"),
    [(None, False), (400, False), (404, False), (429, True), (500, True), (503, True)],
)
def test_kuberay_retries_follow_the_status_not_the_text(status: int | None, transient: bool) -> None:
    # Text that once decided the retry now says the opposite of the status; the status wins.
    text = "(HTTP 429)" if not transient else "(HTTP 404)"
    assert kuberay_transient(KubeRayJobError(text, status_code=status)) is transient
    assert is_transient_status(status) is transient


@pytest.mark.parametrize(
    "error",
    [
        RayJobError("failed to get Ray job 'x': HTTP 503", status_code=503),
        RayJobNotFoundError("Ray job 'x' does not exist"),
        CapacityError("kubernetes backend: listing nodes failed (HTTP 401)", status_code=401),
        RayJobError("no answer"),
    ],
)
def test_status_codes_survive_the_trip_back_from_a_worker(error: Exception) -> None:
    # Spark and Ray workers raise these; they come back to the driver pickled.
    import pickle

    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), str(copy), copy.status_code) == (type(error), str(error), error.status_code)  # type: ignore[attr-defined]
