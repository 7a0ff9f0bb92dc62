"""RayHook / AsyncRayHook: typed job info, address and connection resolution."""

from __future__ import annotations

import json

import pytest
from nuro_ml.exceptions import RayJobError
from nuro_ml.hooks.ray import (
    AsyncRayHook,
    RayHook,
    RayJobInfo,
    RayJobStatus,
    job_dashboard_url,
    normalize_address,
)

#: Copied from ``GET /api/jobs/<id>`` on a Ray 2.60 head (a failed entrypoint).
FAILED_JOB_PAYLOAD = {
    "type": "SUBMISSION",
    "job_id": None,
    "submission_id": "spike-1",
    "driver_info": None,
    "status": "FAILED",
    "entrypoint": 'python -c "import nuro_ml"',
    "message": "Job entrypoint command failed with exit code 1, "
    "last available logs (truncated to 20,000 chars):\n"
    "ModuleNotFoundError: No module named 'nuro_ml'\n",
    "error_type": "JOB_ENTRYPOINT_COMMAND_ERROR",
    "start_time": 1795624834373,
    "end_time": 1795624842527,
    "metadata": {},
    "runtime_env": {},
    "driver_agent_http_address": "http://192.0.2.2:36461",
    "driver_node_id": "16c07e0d71b1bdf6b2090f13080262f17da8e74e22903ea6e9c7ece6",
    "driver_exit_code": 1,
}


@pytest.mark.parametrize(
    ("status", "terminal", "unsuccessful"),
    [
        (RayJobStatus.PENDING, False, False),
        (RayJobStatus.RUNNING, False, False),
        (RayJobStatus.SUCCEEDED, True, False),
        (RayJobStatus.FAILED, True, True),
        (RayJobStatus.STOPPED, True, True),
    ],
)
def test_status_terminality(status: RayJobStatus, terminal: bool, unsuccessful: bool) -> None:
    assert status.is_terminal() is terminal
    assert status.is_unsuccessful_end() is unsuccessful
    assert str(status) == status.value
    assert json.dumps({"s": status}) == f'{{"s": "{status.value}"}}'


def test_job_info_from_api_payload() -> None:
    info = RayJobInfo.from_api(FAILED_JOB_PAYLOAD)
    assert info.submission_id == "spike-1"
    assert info.status is RayJobStatus.FAILED
    assert info.error_type == "JOB_ENTRYPOINT_COMMAND_ERROR"
    assert info.driver_exit_code == 1
    assert info.message is not None and info.message.startswith(
        "Job entrypoint command failed with exit code 1"
    )
    # Round trip through the trigger event form.
    assert RayJobInfo(**info.to_dict()) == info
    assert info.to_dict()["status"] == "FAILED"


def test_job_info_fills_a_readable_default_message_and_converts_strings() -> None:
    info = RayJobInfo(submission_id="x", status="RUNNING")  # type: ignore[arg-type]
    assert info.status is RayJobStatus.RUNNING
    assert info.message == "Job is currently running."


def test_job_info_rejects_payload_without_id() -> None:
    with pytest.raises(RayJobError, match="without submission_id"):
        RayJobInfo.from_api({"status": "RUNNING"})


@pytest.mark.parametrize(
    ("address", "port", "scheme", "expected"),
    [
        ("http://127.0.0.1:8265/", None, None, "http://127.0.0.1:8265"),
        ("ray-head.internal", 8265, None, "http://ray-head.internal:8265"),
        ("ray.example.com", None, "https", "https://ray.example.com"),
        ("127.0.0.1:8265", 9999, None, "http://127.0.0.1:8265"),
    ],
)
def test_normalize_address(address: str, port: int | None, scheme: str | None, expected: str) -> None:
    assert normalize_address(address, port=port, scheme=scheme) == expected


def test_dashboard_url_quotes_the_id() -> None:
    assert job_dashboard_url("http://h:1", "a b/c") == "http://h:1/#/jobs/a%20b%2Fc"


@pytest.fixture
def ray_conn(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(
        "AIRFLOW_CONN_RAY_UNIT",
        json.dumps(
            {
                "conn_type": "ray",
                "host": "ray-head.internal",
                "port": 8265,
                "schema": "https",
                "extra": {"headers": {"Authorization": "Bearer s3cr3t-token"}, "verify": "false"},
            }
        ),
    )
    return "ray_unit"


def test_connection_supplies_address_headers_and_verify(ray_conn: str) -> None:
    hook = RayHook(ray_conn)
    assert hook.address == "https://ray-head.internal:8265"
    assert hook._settings[1] == {"Authorization": "Bearer s3cr3t-token"}
    assert hook._settings[2] is False
    assert hook.job_url("job-1") == "https://ray-head.internal:8265/#/jobs/job-1"


def test_header_values_are_masked_in_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk._shared.secrets_masker import redact

    token = "tok-only-in-this-test-7f3a"
    monkeypatch.setenv(
        "AIRFLOW_CONN_RAY_MASKED",
        json.dumps({"conn_type": "ray", "host": "http://h:1", "extra": {"headers": {"X-Api-Key": token}}}),
    )
    assert redact(f"sent {token}") == f"sent {token}"
    assert RayHook("ray_masked").address == "http://h:1"
    assert redact(f"sent {token}") == "sent ***"


def test_explicit_arguments_beat_the_connection(ray_conn: str) -> None:
    hook = RayHook(
        ray_conn, address="http://127.0.0.1:9000", headers={"X-Team": "perception"}, verify="/ca.pem"
    )
    assert hook._settings == ("http://127.0.0.1:9000", {"X-Team": "perception"}, "/ca.pem")


def test_address_alone_needs_no_connection() -> None:
    hook = RayHook("ray_conn_that_does_not_exist", address="127.0.0.1:8265")
    assert hook.address == "http://127.0.0.1:8265"
    assert hook._settings[1] == {}


def test_missing_connection_without_address_fails() -> None:
    from airflow.sdk.exceptions import AirflowNotFoundException

    with pytest.raises(AirflowNotFoundException):
        _ = RayHook("ray_conn_that_does_not_exist").address


def test_malformed_headers_extra_names_the_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_RAY_BAD",
        json.dumps({"conn_type": "ray", "host": "http://h:1", "extra": {"headers": "not json"}}),
    )
    with pytest.raises(RayJobError, match="connection 'ray_bad': extra 'headers' is not JSON"):
        _ = RayHook("ray_bad").address


async def test_async_hook_resolves_the_same_settings(ray_conn: str) -> None:
    hook = AsyncRayHook(ray_conn)
    assert await hook.get_address() == "https://ray-head.internal:8265"
    client = await hook.jobs_client()
    assert client.verify is False
    assert client.headers == {"Authorization": "Bearer s3cr3t-token"}
    explicit = AsyncRayHook(ray_conn, address="http://127.0.0.1:9000")
    assert await explicit.get_address() == "http://127.0.0.1:9000"


def test_hook_declares_the_connection_type() -> None:
    assert (RayHook.conn_type, RayHook.conn_name_attr, RayHook.default_conn_name, RayHook.hook_name) == (
        "ray",
        "ray_conn_id",
        "ray_default",
        "Ray",
    )
    assert AsyncRayHook.conn_type == "ray"
