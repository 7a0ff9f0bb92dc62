"""The api-server requires authentication, and the plugin's endpoints a user with the right role."""

from __future__ import annotations

import pytest

from tests.cluster.conftest import DAG_ID, Cluster

pytestmark = pytest.mark.cluster


def test_rest_api_rejects_requests_without_a_token(cluster: Cluster) -> None:
    assert cluster.api.request("GET", "/api/v2/dags", user=None).status_code == 401
    response = cluster.api.request("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", user=None, json_body={})
    assert response.status_code == 401
    bad_login = cluster.api.request(
        "POST", "/auth/token", user=None, json_body={"username": "admin", "password": "not-the-password"}
    )
    assert bad_login.status_code == 401


def test_viewer_may_read_but_not_trigger(cluster: Cluster) -> None:
    assert cluster.api.request("GET", f"/api/v2/dags/{DAG_ID}", user="viewer").status_code == 200
    response = cluster.api.request(
        "POST", f"/api/v2/dags/{DAG_ID}/dagRuns", user="viewer", json_body={"logical_date": None}
    )
    assert response.status_code == 403


def test_plugin_endpoints_need_a_user_and_admin_to_change_quotas(cluster: Cluster) -> None:
    assert cluster.api.request("GET", "/nuro-ml/api/capacity", user=None).status_code == 401
    assert cluster.api.request("GET", "/nuro-ml/api/capacity", user="viewer").status_code == 200
    body = {"nominal": 1, "borrowing_limit": 0}
    path = "/nuro-ml/api/quotas/local/intruders"
    assert cluster.api.request("PUT", path, user=None, json_body=body).status_code == 401
    forbidden = cluster.api.request("PUT", path, user="viewer", json_body=body)
    assert forbidden.status_code == 403
    me = cluster.api.request("GET", "/nuro-ml/api/me", user="viewer").json()
    assert me == {"name": "viewer", "admin": False}
