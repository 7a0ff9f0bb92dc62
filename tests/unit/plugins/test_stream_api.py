"""``GET /api/stream`` on the capacity app: the telemetry stream's progress record."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from nuro_ml import settings
from nuro_ml.etl.stream_progress import QueryProgress, StreamProgress
from nuro_ml.ui.app import create_app

from tests.unit.plugins.test_capacity_app import bearer, monkeymodule, tokens

__all__ = ["monkeymodule", "tokens"]


@pytest.fixture
def client(tokens: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TestClient:
    monkeypatch.setenv("NURO_ML_DATA_DIR", str(tmp_path))
    return TestClient(create_app())


def test_stream_progress_is_served_to_logged_in_users(client: TestClient, tokens: dict[str, str]) -> None:
    assert client.get("/api/stream").status_code == 401
    missing = client.get("/api/stream", headers=bearer(tokens["viewer"]))
    assert missing.status_code == 404 and "no telemetry stream has run" in missing.json()["detail"]
    StreamProgress(
        pid=os.getpid(),
        started_at="2026-12-05T12:00:00+00:00",
        checkpoint="c",
        output="o",
        queries={
            "telemetry": QueryProgress(id="q", run_id="r", batch_id=7, watermark="2026-12-05T12:00:00Z")
        },
        freshness={"p95_seconds": 2.5},
    ).write(settings.stream_dir() / "state")
    body = client.get("/api/stream", headers=bearer(tokens["viewer"])).json()
    assert body["running"] is True
    assert body["freshness"] == {"p95_seconds": 2.5}
    assert body["queries"]["telemetry"]["batch_id"] == 7
