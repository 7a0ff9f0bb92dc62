"""Airflow's own API server app loads the plugin folder and serves the capacity app under /nuro-ml."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from nuro_ml.settings import REPO_ROOT

SCRIPT = textwrap.dedent(
    """
    import json
    from airflow.api_fastapi.app import create_app, get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from airflow.models.revoked_token import RevokedToken
    from airflow import settings
    from fastapi.testclient import TestClient

    RevokedToken.__table__.create(settings.engine, checkfirst=True)
    client = TestClient(create_app())
    admin = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="admin", role="admin"))
    headers = {"Authorization": "Bearer " + admin}
    plugins = client.get("/api/v2/plugins", headers=headers).json()["plugins"]
    print(json.dumps({
        "anonymous": client.get("/nuro-ml/api/capacity").status_code,
        "me": client.get("/nuro-ml/api/me", headers=headers).json(),
        "page": client.get("/nuro-ml/capacity", headers=headers).status_code,
        "css": client.get("/nuro-ml/static/capacity.css").status_code,
        "views": [view for plugin in plugins for view in plugin["external_views"]],
    }))
    """
)


@pytest.mark.integration
def test_api_server_serves_the_capacity_app(tmp_path):
    env = dict(os.environ)
    env.update(
        AIRFLOW_HOME=str(tmp_path / "airflow"),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(REPO_ROOT / "plugins"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{tmp_path / 'airflow.db'}",
        AIRFLOW__API_AUTH__JWT_SECRET="mount-test-" + "0123456789abcdef" * 4,
        NURO_ML_LEDGER_URL=f"sqlite:///{tmp_path / 'ledger.db'}",
    )
    (tmp_path / "airflow").mkdir()
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])

    assert result["anonymous"] == 401
    assert result["me"] == {"name": "admin", "admin": True}
    assert result["page"] == 200
    assert result["css"] == 200
    assert {"name": "GPU capacity", "href": "/nuro-ml/capacity", "url_route": "gpu-capacity"}.items() <= next(
        view for view in result["views"] if view["name"] == "GPU capacity"
    ).items()
