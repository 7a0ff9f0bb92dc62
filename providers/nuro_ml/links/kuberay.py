"""Extra link from a KubeRay task to its Ray dashboard."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import BaseOperatorLink
from airflow.sdk.execution_time.xcom import XCom

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

#: XCom key the operator pushes the dashboard URL under, as soon as KubeRay reports it.
DASHBOARD_URL_XCOM_KEY = "dashboard_url"


def dashboard_url(*, template: str | None, dashboard: str, name: str, namespace: str, cluster: str) -> str:
    """The URL a person opens for the job's Ray dashboard.

    KubeRay reports ``status.dashboardURL`` as an in-cluster address without scheme
    (``<cluster>-head-svc.<namespace>.svc.cluster.local:8265``). ``template`` rewrites it for
    an ingress or proxy, with ``{dashboard}``, ``{name}``, ``{namespace}`` and ``{cluster}``
    placeholders, e.g. ``https://ray.example.com/{namespace}/{cluster}/``.
    """
    if template:
        return template.format(dashboard=dashboard, name=name, namespace=namespace, cluster=cluster)
    if dashboard.startswith(("http://", "https://")):
        return dashboard
    return f"http://{dashboard}"


class KubeRayDashboardLink(BaseOperatorLink):
    """ "Ray Dashboard" button on KubeRayJobOperator tasks."""

    name = "Ray Dashboard"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        url = XCom.get_value(ti_key=ti_key, key=DASHBOARD_URL_XCOM_KEY)
        return str(url) if url else ""
