"""``GET /metrics`` (``/nuro-ml/metrics`` as the plugin mounts it): ledger and stream state in OpenMetrics.

Who may scrape: any logged-in Airflow user (the same JWT the capacity page accepts), or a
Prometheus server sending ``Authorization: Bearer <token>`` where the token is the password
of the Airflow connection ``nuro_ml_metrics`` (kept in Airflow's connections or secrets
backend, like any other credential; Prometheus reads it from a file, ``authorization:
credentials_file``). Without that connection only Airflow logins are accepted.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from nuro_ml.metrics.ledger import LedgerCollector
from nuro_ml.metrics.stream import StreamCollector
from nuro_ml.ui import auth

log = logging.getLogger(__name__)

#: Airflow connection whose password is the scrape token.
METRICS_CONN_ID = "nuro_ml_metrics"


def scrape_token(conn_id: str = METRICS_CONN_ID) -> str | None:
    """The configured scrape token, or ``None`` when the connection does not exist."""
    from airflow.exceptions import AirflowNotFoundException
    from airflow.models.connection import Connection

    try:
        conn = Connection.get_connection_from_secrets(conn_id)
    except AirflowNotFoundException:
        return None
    return conn.password or None


async def scraper(request: Request) -> Any:
    """FastAPI dependency: a request with the scrape token, else an Airflow login (or 401)."""
    token = auth.request_token(request)
    if token is not None and request.headers.get("authorization"):
        expected = scrape_token()
        if expected is not None and hmac.compare_digest(token.encode(), expected.encode()):
            return METRICS_CONN_ID
    return await auth.current_user(request)


def build_registry(
    collector: LedgerCollector | None = None, stream: StreamCollector | None = None
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector or LedgerCollector())
    registry.register(stream or StreamCollector())
    return registry


def create_router(registry: CollectorRegistry | None = None) -> APIRouter:
    """The metrics route; ``registry`` defaults to one reading the configured ledger."""
    router = APIRouter()
    state: dict[str, CollectorRegistry] = {}

    def _registry() -> CollectorRegistry:
        # Built on first scrape: the ledger URL is read then, not when the plugin is imported.
        if "registry" not in state:
            state["registry"] = registry or build_registry()
        return state["registry"]

    @router.get(
        "/metrics",
        summary="Ledger state as Prometheus metrics (OpenMetrics text)",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
    )
    def metrics(caller: Any = Depends(scraper)) -> Response:
        return Response(generate_latest(_registry()), media_type=CONTENT_TYPE_LATEST)

    return router
