"""A real ``airflow dags test`` with the repository's plugin: the listener pushes what the
task returned, and the DAG run's success, to a real Pushgateway."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest
from nuro_ml.airflow_home import ensure_airflow_home
from nuro_ml.local_cluster.processes import free_port, port_open, spawn, stop_group, tail, wait_until
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.metrics.test_prometheus import _binary

pytestmark = pytest.mark.timeout(300)

DAG = textwrap.dedent(
    """
    from datetime import datetime

    from airflow.sdk import DAG, BaseOperator


    class MCAPToParquetOperator(BaseOperator):
        # Named like the ETL operator: the listener reads its result the same way.
        def execute(self, context):
            return {"files": 2, "bytes": 500, "quarantined": [], "messages": {"/pose": 77}}


    with DAG("metrics_probe", start_date=datetime(2026, 1, 1), schedule=None):
        MCAPToParquetOperator(task_id="etl")
    """
)


def test_dags_test_pushes_task_and_dag_run_metrics(tmp_path: Path) -> None:
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "probe.py").write_text(DAG)
    home = ensure_airflow_home(tmp_path / "airflow")
    port = free_port()
    gateway = spawn(
        [
            _binary("prometheus-pushgateway"),
            f"--web.listen-address=127.0.0.1:{port}",
            f"--persistence.file={tmp_path / 'pushgateway.data'}",
        ],
        env={"PATH": "/usr/bin:/bin"},
        log=tmp_path / "pushgateway.log",
    )
    try:
        wait_until(lambda: port_open(port), "pushgateway", timeout=30, interval=0.2)
        env = dict(os.environ)
        env.pop("AIRFLOW__CORE__UNIT_TEST_MODE", None)
        env.update(
            AIRFLOW_HOME=str(home),
            AIRFLOW__CORE__DAGS_FOLDER=str(tmp_path / "dags"),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            NURO_ML_DATA_DIR=str(tmp_path / "data"),
            NURO_ML_PUSHGATEWAY_URL=f"http://127.0.0.1:{port}",
        )
        airflow = str(Path(sys.executable).with_name("airflow"))
        for args in (["db", "migrate"], ["dags", "test", "metrics_probe"]):
            done = subprocess.run([airflow, *args], env=env, capture_output=True, text=True, timeout=240)
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
    except TimeoutError:
        pytest.fail(f"pushgateway did not start:\n{tail(tmp_path / 'pushgateway.log')}")
    finally:
        stop_group(gateway.pid, grace=5)
    found = {
        (s.name, s.labels.get("dag_id"), s.labels.get("task_id"), s.labels.get("topic")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert found[("nuro_ml_etl_messages_total", "metrics_probe", "etl", "/pose")] == 77
    assert found[("nuro_ml_etl_bytes_total", "metrics_probe", "etl", None)] == 500
    assert ("nuro_ml_task_last_success_timestamp_seconds", "metrics_probe", "etl", None) in found
    assert ("nuro_ml_dag_last_success_timestamp_seconds", "metrics_probe", None, None) in found
