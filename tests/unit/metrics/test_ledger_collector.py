"""The scrape-time ledger collector and the ``/metrics`` route, against a real SQLite ledger."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from airflow import settings as airflow_settings
from airflow.api_fastapi.app import create_auth_manager
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
from airflow.models.revoked_token import RevokedToken
from fastapi.testclient import TestClient
from nuro_ml.capacity.ledger import QuotaLedger
from nuro_ml.capacity.reasons import WaitReason, WaitRecord
from nuro_ml.capacity.records import LeaseRequest
from nuro_ml.metrics import catalogue
from nuro_ml.metrics.endpoint import build_registry
from nuro_ml.metrics.ledger import LedgerCollector
from nuro_ml.ui.app import create_app
from prometheus_client.openmetrics.exposition import generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from tests.unit.capacity.reason_queue import build_reason_queue

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(found: dict, name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def ledger(tmp_path) -> tuple[QuotaLedger, Clock]:
    clock = Clock()
    ledger = QuotaLedger(f"sqlite:///{tmp_path / 'ledger.db'}", clock=clock)
    ledger.upsert_pool("a100", capacity=8, gpu_type="A100")
    ledger.upsert_quota("perception", "a100", nominal=4, borrowing_limit=0)
    ledger.upsert_quota("planning", "a100", nominal=4)
    return ledger, clock


def _scrape(ledger: QuotaLedger) -> str:
    collector = LedgerCollector(ledger, prices=lambda: {"A100": 4.0})
    return generate_latest(build_registry(collector)).decode()


def test_scrape_reports_queue_reasons_leases_wait_histogram_and_cost(ledger) -> None:
    ledger, clock = ledger
    # A request waits 90 s, then is admitted: one wait observation of 90 s.
    first = LeaseRequest(key="train/run_1/gate/-1", team="perception", pool="a100", gpus=4, poll_interval=600)
    ledger.enqueue(first)
    clock.now = START + timedelta(seconds=90)
    ledger.acquire(first)
    # Admitted at 90 s, released at two hours: 7.9 GPU-hours.
    clock.now = START + timedelta(hours=2)
    assert ledger.release_key(first.key) is not None
    held = LeaseRequest(key="train/run_2/gate/-1", team="perception", pool="a100", gpus=4, poll_interval=600)
    ledger.acquire(held)
    clock.now += timedelta(hours=1)  # 4 more GPU-hours, still active: 11.9 in all
    ledger.enqueue(
        LeaseRequest(key="train/run_3/gate/-1", team="perception", pool="a100", gpus=2, poll_interval=600)
    )
    ledger.enqueue(
        LeaseRequest(key="plan/run_1/gate/-1", team="planning", pool="a100", gpus=6, poll_interval=600)
    )

    text = _scrape(ledger)
    assert text.rstrip().endswith("# EOF")
    found = samples(text)
    pending = "nuro_ml_capacity_pending_requests"
    assert value(found, pending, team="perception", pool="a100", reason="quota_limit") == 1
    assert value(found, pending, team="planning", pool="a100", reason="pool_short") == 1
    assert value(found, "nuro_ml_capacity_pending_gpus", team="planning", pool="a100") == 6
    assert value(found, "nuro_ml_capacity_oldest_wait_seconds", team="planning", pool="a100") == 0
    assert value(found, "nuro_ml_leases_active", team="perception", pool="a100") == 1
    assert value(found, "nuro_ml_leased_gpus", team="perception", pool="a100") == 4
    assert value(found, "nuro_ml_gpu_hours_total", team="perception", pool="a100") == pytest.approx(11.9)
    assert value(found, "nuro_ml_gpu_cost_usd_total", team="perception", pool="a100") == pytest.approx(47.6)
    assert value(found, "nuro_ml_quota_nominal_gpus", team="planning", pool="a100") == 4
    assert value(found, "nuro_ml_quota_borrowing_limit_gpus", team="perception", pool="a100") == 0
    assert ("nuro_ml_quota_borrowing_limit_gpus", (("pool", "a100"), ("team", "planning"))) not in found
    hist = "nuro_ml_capacity_admission_wait_seconds"
    assert value(found, f"{hist}_bucket", team="perception", pool="a100", le="60.0") == 1  # run_2: no wait
    assert value(found, f"{hist}_bucket", team="perception", pool="a100", le="120.0") == 2
    assert value(found, f"{hist}_count", team="perception", pool="a100") == 2
    assert value(found, f"{hist}_sum", team="perception", pool="a100") == pytest.approx(90.0)
    assert value(found, "nuro_ml_ledger_up") == 1


def test_pending_reasons_are_the_ones_admission_rounds_stored(tmp_path) -> None:
    ledger = build_reason_queue(f"sqlite:///{tmp_path / 'reasons.db'}")
    pending = "nuro_ml_capacity_pending_requests"
    found = samples(_scrape(ledger))
    assert value(found, pending, team="perception", pool="a100", reason="quota_limit") == 1
    assert value(found, pending, team="planning", pool="a100", reason="behind_requests") == 1
    assert value(found, pending, team="mapping", pool="h100", reason="pool_short") == 1
    assert value(found, "nuro_ml_capacity_pending_gpus", team="mapping", pool="h100") == 3
    assert value(found, "nuro_ml_capacity_oldest_wait_seconds", team="mapping", pool="h100") >= 300

    # The stored reason is what the scrape reports, not a replay of the policy: a back end
    # that stopped answering is only known to the waiter that tried it.
    key = "mapping_train/run_1/gate/-1"
    ledger.record_wait_reasons({key: WaitRecord(WaitReason.BACKEND_UNREACHABLE, "connection refused")})
    found = samples(_scrape(ledger))
    assert value(found, pending, team="mapping", pool="h100", reason="backend_unreachable") == 1
    assert (
        "nuro_ml_capacity_pending_requests",
        (("pool", "h100"), ("reason", "pool_short"), ("team", "mapping")),
    ) not in found


def test_lease_past_expiry_is_reported_until_reclaimed(ledger) -> None:
    ledger, clock = ledger
    ledger.acquire(LeaseRequest(key="t/r/gate/-1", team="planning", pool="a100", gpus=2, ttl_seconds=60))
    clock.now += timedelta(seconds=120)
    found = samples(_scrape(ledger))
    assert value(found, "nuro_ml_leases_past_expiry", team="planning", pool="a100") == 1
    # Held time stops at the expiry: 2 GPUs x 60 s.
    assert value(found, "nuro_ml_gpu_hours_total", team="planning", pool="a100") == pytest.approx(2 / 60)
    ledger.expire_leases()
    found = samples(_scrape(ledger))
    assert ("nuro_ml_leases_past_expiry", (("pool", "a100"), ("team", "planning"))) not in found


def test_no_series_carries_an_id_label(ledger) -> None:
    ledger, _clock = ledger
    keys = [f"dag_{i}/manual__2026-03-01T12:00:0{i}/gate/-1" for i in range(3)]
    for i, key in enumerate(keys):
        ledger.enqueue(LeaseRequest(key=key, team="planning", pool="a100", gpus=16 if i else 2))
    lease = ledger.acquire(LeaseRequest(key="x/run/gate/-1", team="perception", pool="a100", gpus=1))
    text = _scrape(ledger)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            assert set(sample.labels) <= catalogue.ALLOWED_LABELS, sample
            assert not set(sample.labels) & catalogue.FORBIDDEN_LABELS
            for label_value in sample.labels.values():
                assert label_value not in keys and label_value != lease.lease_id
                assert "manual__" not in label_value
            if sample.name.startswith("nuro_ml_capacity_pending_requests"):
                assert sample.labels["reason"] in {"never_fits", "admissible", "quota_limit", "pool_short"}


def test_unreadable_ledger_reports_down_not_an_error(tmp_path) -> None:
    (tmp_path / "dir.db").mkdir()
    collector = LedgerCollector(QuotaLedger(f"sqlite:///{tmp_path / 'dir.db'}"), prices=dict)
    found = samples(generate_latest(build_registry(collector)).decode())
    assert value(found, "nuro_ml_ledger_up") == 0


# -- the route ----------------------------------------------------------------------------


@pytest.fixture
def app_client(monkeypatch, tmp_path, ledger):
    led, _clock = ledger
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "metrics-tests-" + "0123456789abcdef" * 4)
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "viewer:viewer")
    monkeypatch.setenv(
        "AIRFLOW__CORE__AUTH_MANAGER",
        "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
    )
    monkeypatch.setenv("NURO_ML_LEDGER_URL", led.url)
    monkeypatch.setenv("NURO_ML_GPU_HOUR_PRICES", json.dumps({"A100": 4.0}))
    monkeypatch.setenv(
        "AIRFLOW_CONN_NURO_ML_METRICS", json.dumps({"conn_type": "http", "password": "s3cret-scrape"})
    )
    RevokedToken.__table__.create(airflow_settings.engine, checkfirst=True)
    manager = create_auth_manager()
    manager.init()
    jwt = manager.generate_jwt(SimpleAuthManagerUser(username="viewer", role="viewer"))
    return TestClient(create_app()), jwt


def test_route_accepts_airflow_login_or_the_connection_token(app_client) -> None:
    client, jwt = app_client
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    for token in (jwt, "s3cret-scrape"):
        response = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/openmetrics-text")
        assert "nuro_ml_quota_nominal_gpus" in response.text
    # The token never appears in what is served.
    assert "s3cret" not in response.text
