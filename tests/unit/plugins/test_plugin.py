"""The Airflow plugin declares the capacity app and a "GPU capacity" navigation entry."""

from __future__ import annotations

import importlib.util

from airflow.api_fastapi.core_api.datamodels.plugins import ExternalViewResponse, FastAPIAppResponse
from airflow.plugins_manager import AirflowPlugin
from fastapi import FastAPI
from nuro_ml.settings import REPO_ROOT

PLUGIN_FILE = REPO_ROOT / "plugins" / "nuro_ml_plugin.py"


def load_plugin() -> type[AirflowPlugin]:
    spec = importlib.util.spec_from_file_location("nuro_ml_plugin_under_test", PLUGIN_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.NuroMLPlugin


def test_plugin_mounts_the_capacity_app_under_nuro_ml():
    plugin = load_plugin()

    assert issubclass(plugin, AirflowPlugin)
    [entry] = plugin.fastapi_apps
    assert isinstance(entry["app"], FastAPI)
    FastAPIAppResponse.model_validate({**entry, "app": "nuro_ml.ui.app"})
    assert entry["url_prefix"] == "/nuro-ml"
    routes = {route.path for route in entry["app"].routes}
    assert {"/capacity", "/api/capacity", "/api/quotas/{pool}/{team}", "/api/pools/{pool}"} <= routes


def test_plugin_adds_the_capacity_and_stream_pages_to_the_navigation():
    views = [ExternalViewResponse.model_validate(view) for view in load_plugin().external_views]

    assert [(v.name, v.href, v.destination, v.url_route) for v in views] == [
        ("GPU capacity", "/nuro-ml/capacity", "nav", "gpu-capacity"),
        ("Telemetry stream", "/nuro-ml/stream", "nav", "telemetry-stream"),
    ]
    app = load_plugin().fastapi_apps[0]["app"]
    assert {"/stream", "/api/stream/overview"} <= {route.path for route in app.routes}
