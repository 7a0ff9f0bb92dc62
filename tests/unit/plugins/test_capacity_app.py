"""The GPU capacity page and API: Airflow JWT auth, Admin-only changes, data from a real ledger."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from airflow import settings as airflow_settings
from airflow.api_fastapi.app import create_auth_manager
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
from airflow.models.revoked_token import RevokedToken
from fastapi.testclient import TestClient
from nuro_ml.capacity.ledger import QuotaLedger
from nuro_ml.capacity.records import LeaseRequest
from nuro_ml.ui.app import create_app

from tests.unit.capacity.reason_queue import EXPECTED, build_reason_queue


@pytest.fixture(scope="module")
def monkeymodule():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def tokens(monkeymodule):
    """JWTs signed by Airflow's auth manager for an admin and a viewer."""
    monkeymodule.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "capacity-page-tests-" + "0123456789abcdef" * 4)
    monkeymodule.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin,viewer:viewer")
    monkeymodule.setenv(
        "AIRFLOW__CORE__AUTH_MANAGER",
        "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
    )
    RevokedToken.__table__.create(airflow_settings.engine, checkfirst=True)
    manager = create_auth_manager()
    manager.init()
    return {
        "admin": manager.generate_jwt(SimpleAuthManagerUser(username="admin", role="admin")),
        "viewer": manager.generate_jwt(SimpleAuthManagerUser(username="viewer", role="viewer")),
    }


def build_ledger(url: str) -> None:
    """Two pools, three quotas, two leases held for two hours and two waiting requests."""
    # "Now" is when the ledger is built, not import time: the suite may import it long before.
    now = datetime.now(UTC).replace(microsecond=0)
    two_hours_ago = QuotaLedger(url, clock=lambda: now - timedelta(hours=2))
    two_hours_ago.upsert_pool("a100", capacity=8, gpu_type="A100")
    two_hours_ago.upsert_pool("local", capacity=4, gpu_type="logical")
    two_hours_ago.upsert_quota("perception", "a100", nominal=4, borrowing_limit=2)
    two_hours_ago.upsert_quota("mapping", "a100", nominal=4, borrowing_limit=0, lending_limit=2)
    two_hours_ago.upsert_quota("perception", "local", nominal=4)
    two_hours_ago.acquire(
        LeaseRequest(
            key="nightly/scheduled__2026-11-24/wait_for_gpus/-1", team="perception", pool="a100", gpus=6
        )
    )
    two_hours_ago.acquire(LeaseRequest(key="maps/manual__1/gate/-1", team="perception", pool="local", gpus=1))
    ten_minutes_ago = QuotaLedger(url, clock=lambda: now - timedelta(minutes=10))
    ten_minutes_ago.enqueue(
        LeaseRequest(key="hd_maps/run_a/wait/-1", team="mapping", pool="a100", gpus=4, poll_interval=900)
    )
    ten_minutes_ago.enqueue(
        LeaseRequest(
            key="hd_maps/run_b/wait/-1", team="mapping", pool="a100", gpus=2, priority=5, poll_interval=900
        )
    )


@pytest.fixture(scope="module")
def ledger_url(tmp_path_factory, monkeymodule):
    """The module's ledger (:func:`build_ledger`), which its tests only read."""
    url = f"sqlite:///{tmp_path_factory.mktemp('ledger') / 'ledger.db'}"
    monkeymodule.setenv("NURO_ML_LEDGER_URL", url)
    monkeymodule.delenv("NURO_ML_GPU_HOUR_PRICES", raising=False)
    build_ledger(url)
    return url


@pytest.fixture
def changed_ledger_url(client, tmp_path, monkeypatch):
    """A ledger of the test's own, for a test that changes it: the others see the module's unchanged."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    build_ledger(url)
    monkeypatch.setenv("NURO_ML_LEDGER_URL", url)
    return url


@pytest.fixture
def client(tokens, ledger_url):
    return TestClient(create_app())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_reads_need_a_logged_in_user(client):
    response = client.get("/api/capacity")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_the_page_offers_the_login_page_to_anonymous_visitors(client):
    response = client.get("/capacity")
    assert response.status_code == 401
    assert 'href="/auth/login' in response.text


@pytest.mark.parametrize("token", ["not-a-jwt", "eyJhbGciOiJIUzUxMiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"])
def test_invalid_tokens_are_rejected(client, token):
    assert client.get("/api/capacity", headers=bearer(token)).status_code == 401


def test_a_revoked_token_is_rejected(client, tokens):
    manager = create_auth_manager()
    token = manager.generate_jwt(SimpleAuthManagerUser(username="viewer", role="viewer"))
    assert client.get("/api/me", headers=bearer(token)).status_code == 200

    manager.revoke_token(token)

    assert client.get("/api/me", headers=bearer(token)).status_code == 401


def test_capacity_overview(client, tokens):
    response = client.get("/api/capacity", headers=bearer(tokens["viewer"]))

    assert response.status_code == 200
    data = response.json()
    pools = {p["name"]: p for p in data["pools"]}
    assert pools["a100"] | {"utilization": None} == {
        "name": "a100",
        "gpu_type": "A100",
        "capacity": 8,
        "used": 6,
        "free": 2,
        "utilization": None,
        "waiting_requests": 2,
        "waiting_gpus": 6,
        "price_per_gpu_hour": 4.10,
    }
    assert pools["a100"]["utilization"] == 0.75
    assert pools["local"]["price_per_gpu_hour"] is None

    quotas = {(q["team"], q["pool"]): q for q in data["quotas"]}
    assert quotas[("perception", "a100")] == {
        "team": "perception",
        "pool": "a100",
        "nominal": 4,
        "borrowing_limit": 2,
        "lending_limit": None,
        "limit": 6,
        "used": 6,
        "borrowed": 2,
    }
    assert quotas[("mapping", "a100")]["used"] == 0

    [a100_lease] = [lease for lease in data["leases"] if lease["pool"] == "a100"]
    assert (a100_lease["dag_id"], a100_lease["run_id"], a100_lease["task_id"]) == (
        "nightly",
        "scheduled__2026-11-24",
        "wait_for_gpus",
    )
    assert a100_lease["gpu_hours"] == pytest.approx(12.0, abs=0.1)
    assert a100_lease["cost"] == pytest.approx(12.0 * 4.10, abs=0.5)

    queue = data["queue"]
    assert [entry["key"] for entry in queue] == ["hd_maps/run_b/wait/-1", "hd_maps/run_a/wait/-1"]
    assert [entry["position"] for entry in queue] == [1, 2]
    assert queue[0]["wait_seconds"] == pytest.approx(600, abs=60)
    assert not queue[0]["stale"]

    costs = {(c["team"], c["pool"]): c for c in data["costs"]}
    assert costs[("perception", "a100")]["gpu_hours"] == pytest.approx(12.0, abs=0.1)
    assert costs[("perception", "local")]["cost"] is None
    assert data["total_cost"] == pytest.approx(costs[("perception", "a100")]["cost"])

    usage = data["usage"]
    assert usage["capacity"] == 12
    [series] = usage["series"]
    assert series["team"] == "perception"
    gpu_hours = sum(series["gpus"]) * usage["bucket_seconds"] / 3600
    assert gpu_hours == pytest.approx(14.0, abs=0.2)  # 6 + 1 GPUs for two hours


def test_window_and_buckets_are_validated(client, tokens):
    response = client.get("/api/capacity", params={"hours": 0}, headers=bearer(tokens["viewer"]))
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "hours"]
    assert (
        client.get("/api/capacity", params={"buckets": 1000}, headers=bearer(tokens["viewer"])).status_code
        == 422
    )
    response = client.get("/api/queue", params={"policy": "lottery"}, headers=bearer(tokens["viewer"]))
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "policy"]


def test_page_renders_for_a_user_logged_in_through_the_ui_cookie(client, tokens):
    client.cookies.set("_token", tokens["viewer"])
    response = client.get("/capacity")

    assert response.status_code == 200
    page = response.text
    assert "signed in as\n    <strong>viewer</strong>" in page
    assert 'data-admin="false"' in page
    assert '<tr data-pool="a100">' in page
    assert '<tr data-team="mapping" data-pool="a100">' in page
    assert 'data-key="hd_maps/run_b/wait/-1"' in page
    assert "nightly / wait_for_gpus" in page
    assert len(re.findall(r'<rect [^>]*data-team="perception"', page)) >= 2  # two hours of 24 one-hour bars
    assert 'class="capacity"' in page
    assert 'id="quota-form"' not in page  # no admin controls for viewers


def test_admins_get_the_quota_controls(client, tokens):
    page = client.get("/capacity", headers=bearer(tokens["admin"])).text
    assert 'data-admin="true"' in page
    assert 'id="quota-form"' in page


def test_me_reports_the_admin_flag(client, tokens):
    assert client.get("/api/me", headers=bearer(tokens["admin"])).json() == {"name": "admin", "admin": True}
    assert client.get("/api/me", headers=bearer(tokens["viewer"])).json() == {
        "name": "viewer",
        "admin": False,
    }


def test_viewers_cannot_change_quotas(client, tokens, ledger_url):
    response = client.put("/api/quotas/a100/mapping", json={"nominal": 8}, headers=bearer(tokens["viewer"]))

    assert response.status_code == 403
    assert response.json()["detail"] == "Changing GPU quotas requires the Admin role"
    assert {(q.team, q.nominal) for q in QuotaLedger(ledger_url).quotas("a100")} == {
        ("perception", 4),
        ("mapping", 4),
    }


def test_anonymous_changes_are_unauthenticated_not_forbidden(client):
    assert client.put("/api/quotas/a100/mapping", json={"nominal": 8}).status_code == 401


def test_admin_sets_and_removes_a_quota(client, tokens, changed_ledger_url):
    response = client.put(
        "/api/quotas/a100/planning",
        json={"nominal": 2, "borrowing_limit": 1, "lending_limit": 1},
        headers=bearer(tokens["admin"]),
    )
    assert response.status_code == 200
    assert response.json() == {
        "team": "planning",
        "pool": "a100",
        "nominal": 2,
        "borrowing_limit": 1,
        "lending_limit": 1,
        "limit": 3,
        "used": 0,
        "borrowed": 0,
    }
    stored = {q.team: q for q in QuotaLedger(changed_ledger_url).quotas("a100")}["planning"]
    assert (stored.nominal, stored.borrowing_limit, stored.lending_limit) == (2, 1, 1)

    assert client.delete("/api/quotas/a100/planning", headers=bearer(tokens["admin"])).status_code == 204
    assert "planning" not in {q.team for q in QuotaLedger(changed_ledger_url).quotas("a100")}
    assert client.delete("/api/quotas/a100/planning", headers=bearer(tokens["admin"])).status_code == 404


def test_admin_sets_a_fractional_quota_shown_on_the_page(client, tokens, changed_ledger_url):
    admin = bearer(tokens["admin"])
    response = client.put(
        "/api/quotas/a100/planning", json={"nominal": 2.5, "borrowing_limit": "500m"}, headers=admin
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["nominal"], body["borrowing_limit"], body["limit"]) == (2.5, 0.5, 3)
    assert {q.team: q.nominal for q in QuotaLedger(changed_ledger_url).quotas("a100")}["planning"] == 2.5
    page = client.get("/capacity", headers=admin).text
    row = page[page.index('<tr data-team="planning" data-pool="a100">') :]
    assert '<td class="num">2.5</td>' in row[: row.index("</tr>")]
    assert 'data-nominal="2.5"' in row
    # Whole GPUs stay whole numbers in the API.
    whole = client.put("/api/quotas/a100/planning", json={"nominal": 3}, headers=admin).json()
    assert whole["nominal"] == 3 and isinstance(whole["nominal"], int)


@pytest.mark.parametrize(
    ("path", "body", "where"),
    [
        ("/api/quotas/a100/mapping", {"nominal": -1}, ["body", "nominal"]),
        ("/api/quotas/a100/mapping", {"nominal": "lots"}, ["body", "nominal"]),
        ("/api/quotas/a100/mapping", {"nominal": 2.0005}, ["body", "nominal"]),
        ("/api/quotas/a100/mapping", {"nominal": 2, "lending_limit": 3}, ["body"]),
        ("/api/quotas/a100/mapping", {"nominal": 2, "borrow": 3}, ["body", "borrow"]),
        ("/api/quotas/a100/Mapping Team", {"nominal": 2}, ["path", "team"]),
        ("/api/pools/a100", {"capacity": -8}, ["body", "capacity"]),
    ],
)
def test_invalid_changes_are_rejected_with_the_field(client, tokens, path, body, where):
    response = client.put(path, json=body, headers=bearer(tokens["admin"]))

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == where


def test_a_quota_in_an_unknown_pool_is_not_found(client, tokens):
    response = client.put("/api/quotas/h100/mapping", json={"nominal": 2}, headers=bearer(tokens["admin"]))
    assert response.status_code == 404
    assert response.json()["detail"] == "pool 'h100' is not registered"


def test_admin_resizes_a_pool(client, tokens, changed_ledger_url):
    response = client.put(
        "/api/pools/local", json={"capacity": 6, "gpu_type": "logical"}, headers=bearer(tokens["admin"])
    )

    assert response.status_code == 200
    assert response.json()["capacity"] == 6
    assert QuotaLedger(changed_ledger_url).pool("local").capacity == 6


def test_configured_prices_override_the_defaults(client, tokens, monkeypatch):
    monkeypatch.setenv("NURO_ML_GPU_HOUR_PRICES", '{"local": 0.5, "A100": 2.0}')

    pools = {
        p["name"]: p for p in client.get("/api/capacity", headers=bearer(tokens["viewer"])).json()["pools"]
    }

    assert pools["local"]["price_per_gpu_hour"] == 0.5
    assert pools["a100"]["price_per_gpu_hour"] == 2.0


def test_queue_api_and_page_say_why_each_request_waits(client, tokens, tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'reasons.db'}"
    build_reason_queue(url)
    monkeypatch.setenv("NURO_ML_LEDGER_URL", url)

    response = client.get("/api/queue", headers=bearer(tokens["viewer"]))
    assert response.status_code == 200
    queue = {entry["key"]: entry for entry in response.json()}
    assert {key: entry["reason"] for key, entry in queue.items()} == EXPECTED
    behind = queue["planning_train/run_2/gate/-1"]
    assert behind["gpus_ahead"] == 4
    assert behind["reason_message"].startswith("behind 4 GPUs of higher-priority or older requests")

    page = client.get("/capacity", headers=bearer(tokens["viewer"])).text
    row = page.split('data-key="planning_train/run_2/gate/-1"')[1].split("</tr>")[0]
    assert "<code>behind_requests</code> (4 GPUs ahead)" in row
    assert (
        "<code>quota_limit</code>"
        in page.split('data-key="perception_train/run_1/gate/-1"')[1].split("</tr>")[0]
    )
    assert (
        "<code>pool_short</code>" in page.split('data-key="mapping_train/run_1/gate/-1"')[1].split("</tr>")[0]
    )


def test_cli_page_data_and_api_show_one_capacity_view(client, tokens, tmp_path, monkeypatch, capsys):
    """One ledger state, three readers: ``nuro-ml quota show --json``, the page's data and the API.

    The state holds a lease still marked active whose TTL ran out, admitted requests whose waits
    tell linear-interpolated percentiles from nearest-rank ones, and a queue the fair policy
    orders differently from priority-then-arrival.
    """
    from nuro_ml.capacity import ledger_store
    from nuro_ml.capacity.policy import decide
    from nuro_ml.cli import main
    from nuro_ml.ui.capacity_data import overview

    now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    url = f"sqlite:///{tmp_path / 'views.db'}"

    def at(seconds_ago: float) -> QuotaLedger:
        return QuotaLedger(url, clock=lambda: now - timedelta(seconds=seconds_ago))

    setup = at(6 * 3600)
    setup.upsert_pool("a100", capacity=8, gpu_type="A100")
    setup.upsert_pool("h100", capacity=4, gpu_type="H100")
    setup.upsert_quota("perception", "a100", nominal=4, borrowing_limit=4)
    setup.upsert_quota("mapping", "a100", nominal=4)
    setup.upsert_quota("mapping", "h100", nominal=4)
    # Admitted after waiting 60 s, 120 s and 600 s, then released.
    for number, wait in enumerate((60, 120, 600)):
        request = LeaseRequest(key=f"hd_maps/run_{number}/gate/-1", team="mapping", pool="h100", gpus=1)
        at(3 * 3600).enqueue(request)
        lease = at(3 * 3600 - wait).try_acquire(request)
        assert lease is not None
        at(3 * 3600 - wait - 1).release(lease.lease_id)
    held = at(3600).acquire(
        LeaseRequest(key="nightly/scheduled__2026-11-24/gate/-1", team="perception", pool="a100", gpus=6)
    )
    # Its holder died: the TTL ran out an hour ago, and no admission round has expired it yet.
    expired = at(2 * 3600).acquire(
        LeaseRequest(key="maps/manual__1/gate/-1", team="mapping", pool="h100", gpus=3, ttl_seconds=3600)
    )
    perception = LeaseRequest(
        key="nightly/manual__2/gate/-1", team="perception", pool="a100", gpus=2, poll_interval=900
    )
    mapping = LeaseRequest(
        key="hd_maps/run_9/gate/-1", team="mapping", pool="a100", gpus=4, poll_interval=900
    )
    at(300).enqueue(perception)
    at(200).enqueue(mapping)

    monkeypatch.setattr(ledger_store, "utcnow", lambda: now)
    monkeypatch.setenv("NURO_ML_LEDGER_URL", url)
    capsys.readouterr()
    assert main(["quota", "--ledger-url", url, "show", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert cli.pop("ledger") == f"sqlite:///{tmp_path / 'views.db'}"
    page = overview(hours=24, buckets=1).model_dump(mode="json")
    api = client.get("/api/capacity", params={"buckets": 1}, headers=bearer(tokens["viewer"])).json()

    assert cli == page == api
    assert client.get("/api/queue", headers=bearer(tokens["viewer"])).json() == page["queue"]
    assert client.get("/api/quotas", headers=bearer(tokens["viewer"])).json() == page["quotas"]

    # The expired lease holds nothing anywhere.
    assert [lease["lease_id"] for lease in page["leases"]] == [held.lease_id]
    assert expired.lease_id not in json.dumps(page)
    pools = {pool["name"]: pool for pool in page["pools"]}
    assert (pools["a100"]["used"], pools["h100"]["used"], pools["h100"]["free"]) == (6, 0, 4)
    quotas = {(q["team"], q["pool"]): q["used"] for q in page["quotas"]}
    assert quotas == {("perception", "a100"): 6, ("mapping", "a100"): 0, ("mapping", "h100"): 0}

    # The queue is in the policy's order: perception holds most of the pool, so mapping's later
    # request goes first under fair share, not the earlier one as priority-then-arrival would have it.
    decision = decide(QuotaLedger(url).snapshot(), "fair")
    assert [entry["key"] for entry in page["queue"]] == sorted(decision.position, key=decision.position.get)
    assert [(entry["key"], entry["position"]) for entry in page["queue"]] == [
        (mapping.key, 1),
        (perception.key, 2),
    ]
    # Under FIFO the earlier request goes first, in every reader.
    fifo = client.get("/api/queue", params={"policy": "fifo"}, headers=bearer(tokens["viewer"])).json()
    assert [entry["key"] for entry in fifo] == [perception.key, mapping.key]
    assert main(["quota", "--ledger-url", url, "show", "--json", "--policy", "fifo"]) == 0
    assert json.loads(capsys.readouterr().out)["queue"] == fifo
    assert main(["quota", "--ledger-url", url, "show", "--policy", "lottery"]) == 2
    assert "--policy: unknown admission policy 'lottery'" in capsys.readouterr().err

    # Linear interpolation over the admitted waits: 0 s for the two leases taken at once, then
    # 60, 120 and 600 s (nearest rank gives 600 s for the p95 of all five).
    waits = page["waits"]
    assert (waits["admitted"], waits["p50_seconds"], waits["p95_seconds"]) == (5, 60.0, 504.0)
    assert waits["teams"] == [
        {"team": "mapping", "admitted": 4, "p50_seconds": 90.0, "p95_seconds": 528.0, "max_seconds": 600.0},
        {"team": "perception", "admitted": 1, "p50_seconds": 0.0, "p95_seconds": 0.0, "max_seconds": 0.0},
    ]
