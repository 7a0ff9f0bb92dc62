"""Airflow plugin: the "GPU capacity" page (pools, quotas, leases, queue, cost) in the UI.

The page and its JSON API are a FastAPI app from the provider package (``nuro_ml.ui``,
shipped in the wheel), mounted by Airflow's API server under ``/nuro-ml``; the external
view adds "GPU capacity" to the navigation, shown inside the UI at ``/plugin/gpu-capacity``.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin
from nuro_ml.ui.app import create_app

URL_PREFIX = "/nuro-ml"


class NuroMLPlugin(AirflowPlugin):
    """GPU capacity page and API for the nuro-ml platform."""

    name = "nuro_ml"
    fastapi_apps: list[Any] = [
        {"app": create_app(), "url_prefix": URL_PREFIX, "name": "nuro-ml GPU capacity"},
    ]
    external_views: list[Any] = [
        {
            "name": "GPU capacity",
            "href": f"{URL_PREFIX}/capacity",
            "destination": "nav",
            "category": "browse",
            "url_route": "gpu-capacity",
        },
    ]
