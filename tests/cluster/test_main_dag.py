"""The main DAG, triggered through the REST API, runs to success on the cluster."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster import checks
from tests.cluster.conftest import DAG_ID, Cluster

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def main_run(cluster: Cluster) -> Iterator[str]:
    cluster.api.wait_for_dag(DAG_ID)
    run_id = cluster.api.trigger(DAG_ID, cluster.conf())
    run = cluster.run_to_end(run_id, "main")
    states = {t: ti["state"] for t, ti in cluster.api.task_instances(DAG_ID, run_id).items()}
    assert run["state"] == "success", states
    yield run_id


def test_every_task_succeeded_on_the_cluster(cluster: Cluster, main_run: str) -> None:
    tis = cluster.api.task_instances(DAG_ID, main_run)
    assert {t: ti["state"] for t, ti in tis.items()} == dict.fromkeys(tis, "success")
    summary = cluster.api.xcom(DAG_ID, main_run, "summarize")
    assert summary["training"]["status"] == "SUCCEEDED"
    # Trained on the cluster's Ray, not on a head of its own.
    assert summary["training"]["job_url"].startswith(cluster.state["ray"]["dashboard_url"])
    assert int(summary["training"]["metrics"]["train_rows"]) > 0
    etl_log = checks.task_log(cluster, main_run, "etl", 1).read_text()
    assert f"--master {cluster.state['spark']['master_url']}" in etl_log


def test_etl_rows_and_online_features(cluster: Cluster, main_run: str) -> None:
    checks.check_etl_rows(cluster)
    checks.check_online_features(cluster)


def test_lease_taken_once_and_released(cluster: Cluster, main_run: str) -> None:
    checks.check_leases(cluster, main_run)


def test_no_secret_in_logs_xcom_or_rendered_templates(cluster: Cluster, main_run: str) -> None:
    assert checks.check_no_secret_leaked(cluster, main_run) > 0
