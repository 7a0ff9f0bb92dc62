"""Airflow plugin: the "GPU capacity" page (pools, quotas, leases, queue, cost) in the UI, and the
"Telemetry stream" page (freshness, rates, last committed batch, watermark).

The page and its JSON API are a FastAPI app from the provider package (``nuro_ml.ui``,
shipped in the wheel), mounted by Airflow's API server under ``/nuro-ml``; the external
view adds "GPU capacity" to the navigation, shown inside the UI at ``/plugin/gpu-capacity``.
The same app serves ``/nuro-ml/metrics`` for Prometheus, and a listener records each finished task's metrics.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin
from nuro_ml.metrics import listener as metrics_listener
from nuro_ml.ui.app import create_app

URL_PREFIX = "/nuro-ml"


class NuroMLPlugin(AirflowPlugin):
    """GPU capacity page and API for the nuro-ml platform."""

    name = "nuro_ml"
    fastapi_apps: list[Any] = [
        {"app": create_app(), "url_prefix": URL_PREFIX, "name": "nuro-ml GPU capacity"},
    ]
    # Task and DAG-run metrics (Pushgateway and Airflow's Stats), see nuro_ml.metrics.tasks.
    listeners: list[Any] = [metrics_listener]
    external_views: list[Any] = [
        {
            "name": "GPU capacity",
            "href": f"{URL_PREFIX}/capacity",
            "destination": "nav",
            "category": "browse",
            "url_route": "gpu-capacity",
        },
        {
            "name": "Telemetry stream",
            "href": f"{URL_PREFIX}/stream",
            "destination": "nav",
            "category": "browse",
            "url_route": "telemetry-stream",
        },
    ]
