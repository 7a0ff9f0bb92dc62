"""The telemetry stream page: its data from the progress record, and the HTML route."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from nuro_ml.etl.stream_progress import QueryProgress, StreamProgress
from nuro_ml.ui.app import create_app
from nuro_ml.ui.stream_data import state_dir, stream_overview

from tests.unit.plugins.test_capacity_app import bearer, monkeymodule, tokens

__all__ = ["monkeymodule", "tokens"]

NOW = datetime(2026, 12, 5, 12, 0, 30, tzinfo=UTC)
DEAD_PID = 2**22 + 17  # above Linux's pid_max default: no such process


def record(pid: int = DEAD_PID) -> StreamProgress:
    return StreamProgress(
        pid=pid,
        started_at="2026-12-05T11:00:00+00:00",
        checkpoint="/data/stream/checkpoint",
        output="/data/etl",
        app_id="local-1733400000000",
        queries={
            "telemetry": QueryProgress(
                id="q-t",
                run_id="r",
                batch_id=41,
                committed_at="2026-12-05T12:00:20+00:00",
                heartbeat_at="2026-12-05T12:00:25+00:00",
                num_input_rows=1000,
                input_rows_per_second=998.5,
                processed_rows_per_second=1500.25,
                batch_duration_ms=640,
                watermark="2026-12-05T11:50:10.000Z",
            ),
            "segments_vehicle_can": QueryProgress(
                id="q-s",
                run_id="r",
                batch_id=9,
                committed_at="2026-12-05T12:00:28+00:00",
                heartbeat_at="2026-12-05T12:00:28+00:00",
                watermark="2026-12-05T06:00:00.000Z",
            ),
            "online": QueryProgress(id="q-o", run_id="r", batch_id=3),  # no event-time watermark
        },
        freshness={
            "p95_seconds": 3.25,
            "segment_p95_seconds": 6.5,
            "record_p95_seconds": 1.75,
            "batch_p95_seconds": 2.0,
            "batch_max_seconds": 2.5,
            "samples": 12000.0,
        },
    )


def test_page_data_has_freshness_rates_last_commit_and_watermark(tmp_path: Path) -> None:
    data = stream_overview(record(), where=tmp_path, now=NOW)
    assert not data.running and data.app_id == "local-1733400000000"
    assert data.freshness.model_dump() == {
        "p95_seconds": 3.25,
        "segment_p95_seconds": 6.5,
        "record_p95_seconds": 1.75,
        "last_batch_p95_seconds": 2.0,
        "last_batch_max_seconds": 2.5,
        "samples": 12000,
    }
    # The lowest watermark is what batch runs gate on.
    assert data.watermark == datetime(2026, 12, 5, 6, 0, tzinfo=UTC)
    assert data.last_committed_at == datetime(2026, 12, 5, 12, 0, 28, tzinfo=UTC)
    rows = {q.name: q for q in data.queries}
    assert [q.name for q in data.queries] == ["online", "segments_vehicle_can", "telemetry"]
    telemetry = rows["telemetry"]
    ages = (telemetry.commit_age_seconds, telemetry.heartbeat_age_seconds)
    assert telemetry.batch_id == 41 and ages == (10.0, 5.0)
    assert (telemetry.input_rows_per_second, telemetry.processed_rows_per_second) == (998.5, 1500.25)
    assert telemetry.watermark == datetime(2026, 12, 5, 11, 50, 10, tzinfo=UTC)
    assert rows["online"].watermark is None and rows["online"].committed_at is None
    assert {q.state for q in data.queries} == {"stopped"}  # the driver is gone

    # Spark reports the epoch until a query has seen event time: the stream has no watermark yet.
    fresh = record()
    fresh.queries["segments_vehicle_can"].watermark = "1970-01-01T00:00:00.000Z"
    started = stream_overview(fresh, where=tmp_path, now=NOW)
    assert started.watermark is None
    assert {q.name: q.watermark is None for q in started.queries}["segments_vehicle_can"]


def test_query_states_follow_the_driver_and_the_termination(tmp_path: Path) -> None:
    progress = record(pid=os.getpid())
    progress.queries["online"].terminated = "StreamingQueryException: push failed\n\tat ..."
    progress.queries["segments_vehicle_can"].terminated = ""
    states = {q.name: q.state for q in stream_overview(progress, where=tmp_path, now=NOW).queries}
    assert states == {
        "online": "failed: StreamingQueryException: push failed",
        "segments_vehicle_can": "stopped",
        "telemetry": "running",
    }


@pytest.fixture
def client(tokens: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TestClient:
    monkeypatch.setenv("NURO_ML_DATA_DIR", str(tmp_path))
    return TestClient(create_app())


def test_the_page_shows_the_record_to_logged_in_users(client: TestClient, tokens: dict[str, str]) -> None:
    anonymous = client.get("/stream")
    assert anonymous.status_code == 401 and "text/html" in anonymous.headers["content-type"]
    viewer = bearer(tokens["viewer"])

    empty = client.get("/stream", headers=viewer)
    assert empty.status_code == 200 and f"No telemetry stream has run under {state_dir()}" in empty.text
    assert client.get("/api/stream/overview", headers=viewer).status_code == 404

    record(pid=os.getpid()).write(state_dir())
    page = client.get("/stream", headers=viewer)
    assert page.status_code == 200
    html = page.text
    assert '<td id="freshness-p95">3.2 s</td>' in html  # "%.1f" of 3.25 (round half to even)
    assert '<td id="driver">running (pid' in html
    assert '<td id="watermark">2026-12-05 06:00:00 UTC</td>' in html
    assert '<td id="last-commit">2026-12-05 12:00:28 UTC</td>' in html
    assert '<tr data-query="telemetry">' in html and "998.5" in html and "1500.2" in html
    assert '<meta http-equiv="refresh" content="10">' in html

    overview = client.get("/api/stream/overview", headers=viewer).json()
    assert overview["running"] is True and overview["freshness"]["p95_seconds"] == 3.25
    assert overview["watermark"].startswith("2026-12-05T06:00:00")


def test_an_unreadable_record_is_a_503_naming_the_file(client: TestClient, tokens: dict[str, str]) -> None:
    state_dir().mkdir(parents=True)
    (state_dir() / "progress.json").write_text("{half")
    response = client.get("/stream", headers=bearer(tokens["viewer"]))
    assert response.status_code == 503 and "progress.json is not JSON" in response.json()["detail"]
