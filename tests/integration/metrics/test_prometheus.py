"""Real Prometheus and Pushgateway on loopback: Prometheus scrapes the plugin's endpoint while
the test takes leases and queues requests, a task pushes its counters, and PromQL through
Prometheus's HTTP API returns what happened. Every dashboard query runs against it."""

from __future__ import annotations

import json
import shutil
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import uvicorn
import yaml
from fastapi import FastAPI
from nuro_ml.capacity.ledger import QuotaLedger
from nuro_ml.capacity.records import LeaseRequest
from nuro_ml.local_cluster.processes import free_port, port_open, spawn, stop_group, tail, wait_until
from nuro_ml.metrics import catalogue as cat
from nuro_ml.metrics.listener import record_task_instance
from nuro_ml.ui.app import create_app

from tests.unit.deploy.test_observability import dashboard_queries

TOKEN = "scrape-token-for-tests"
DAG_ID = "av_training_pipeline"
ETL_RESULT = {"files": 4, "bytes": 1000, "quarantined": [{"file": "x.mcap"}], "messages": {"/imu": 2000}}

pytestmark = pytest.mark.timeout(180)


def _binary(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} not found: install the Debian packages prometheus and prometheus-pushgateway"
    return path


class _App:
    """The plugin's app mounted at /nuro-ml as Airflow mounts it, served by uvicorn in a thread."""

    def __init__(self) -> None:
        root = FastAPI()
        root.mount("/nuro-ml", create_app())
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(root, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> _App:
        self.thread.start()
        wait_until(lambda: port_open(self.port), "the metrics app", timeout=30, interval=0.1)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    monkeypatch.setenv("NURO_ML_LEDGER_URL", ledger_url)
    monkeypatch.setenv("NURO_ML_GPU_HOUR_PRICES", json.dumps({"A100": 4.1}))
    monkeypatch.setenv(
        "AIRFLOW_CONN_NURO_ML_METRICS", json.dumps({"conn_type": "generic", "password": TOKEN})
    )
    ledger = QuotaLedger(ledger_url)
    ledger.upsert_pool("a100", capacity=8, gpu_type="A100")
    ledger.upsert_pool("local", capacity=2)
    ledger.upsert_quota("perception", "a100", nominal=4, borrowing_limit=0)
    ledger.upsert_quota("planning", "a100", nominal=4)
    ledger.upsert_quota("mapping", "local", nominal=2)

    gateway_port, prom_port = free_port(), free_port()
    gateway = spawn(
        [
            _binary("prometheus-pushgateway"),
            f"--web.listen-address=127.0.0.1:{gateway_port}",
            # Debian's build persists to /var/lib/prometheus by default: keep this one private.
            f"--persistence.file={tmp_path / 'pushgateway.data'}",
        ],
        env={"PATH": "/usr/bin:/bin"},
        log=tmp_path / "pushgateway.log",
    )
    monkeypatch.setenv("NURO_ML_PUSHGATEWAY_URL", f"http://127.0.0.1:{gateway_port}")
    procs = [gateway]
    try:
        with _App() as app:
            (tmp_path / "token").write_text(TOKEN)
            config = {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "nuro-ml",
                        "metrics_path": "/nuro-ml/metrics",
                        "authorization": {"type": "Bearer", "credentials_file": str(tmp_path / "token")},
                        "static_configs": [{"targets": [f"127.0.0.1:{app.port}"]}],
                    },
                    {
                        "job_name": "nuro-ml-pushgateway",
                        "honor_labels": True,
                        "static_configs": [{"targets": [f"127.0.0.1:{gateway_port}"]}],
                    },
                ],
            }
            (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
            prometheus = spawn(
                [
                    _binary("prometheus"),
                    f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                ],
                env={"PATH": "/usr/bin:/bin"},
                log=tmp_path / "prometheus.log",
            )
            procs.append(prometheus)
            for port, what, log in (
                (gateway_port, "pushgateway", "pushgateway.log"),
                (prom_port, "prometheus", "prometheus.log"),
            ):
                try:
                    wait_until(lambda port=port: port_open(port), what, timeout=60, interval=0.2)
                except TimeoutError:
                    pytest.fail(f"{what} did not start:\n{tail(tmp_path / log)}")
            yield SimpleNamespace(ledger=ledger, prometheus=f"http://127.0.0.1:{prom_port}", logs=tmp_path)
    finally:
        for proc in reversed(procs):
            stop_group(proc.pid, grace=5)


def query(base: str, promql: str) -> list[dict[str, Any]]:
    body = _get(f"{base}/api/v1/query?{urllib.parse.urlencode({'query': promql})}")
    assert body["status"] == "success", body
    return body["data"]["result"]


def eventually(base: str, promql: str, expected: dict[tuple[str, ...], float], by: tuple[str, ...]) -> None:
    """Wait until ``promql`` returns exactly ``expected`` (label values of ``by`` -> value)."""
    seen: dict[tuple[str, ...], float] = {}

    def matches() -> bool:
        nonlocal seen
        seen = {
            tuple(r["metric"].get(label, "") for label in by): float(r["value"][1])
            for r in query(base, promql)
        }
        return seen == expected

    try:
        wait_until(matches, promql, timeout=30, interval=0.5)
    except TimeoutError:
        pytest.fail(f"{promql}: expected {expected}, Prometheus returned {seen}")


def test_prometheus_sees_the_queue_leases_waits_and_pushed_task_counters(stack: SimpleNamespace) -> None:
    ledger, prom = stack.ledger, stack.prometheus
    eventually(prom, 'up{job="nuro-ml"}', {("nuro-ml",): 1.0}, ("job",))

    # Leases and requests that wait for different reasons, taken while Prometheus scrapes.
    ledger.acquire(LeaseRequest(key="perc/run_1/gate/-1", team="perception", pool="a100", gpus=4))
    ledger.enqueue(LeaseRequest(key="perc/run_2/gate/-1", team="perception", pool="a100", gpus=2))
    ledger.enqueue(LeaseRequest(key="plan/run_1/gate/-1", team="planning", pool="a100", gpus=6))
    ledger.enqueue(LeaseRequest(key="plan/run_2/gate/-1", team="planning", pool="a100", gpus=3))
    # mapping was enqueued 1.2 s ago (through a ledger whose clock is that far behind), admitted now.
    mapping = LeaseRequest(key="maps/run_1/gate/-1", team="mapping", pool="local", gpus=1)
    QuotaLedger(ledger.url, clock=lambda: datetime.now(UTC) - timedelta(seconds=1.2)).enqueue(mapping)
    ledger.acquire(mapping)

    eventually(
        prom,
        "sum by (reason) (nuro_ml_capacity_pending_requests)",
        {("quota_limit",): 1, ("pool_short",): 1, ("backfill_held",): 1},
        ("reason",),
    )
    eventually(
        prom,
        "nuro_ml_leases_active",
        {("perception", "a100"): 1, ("mapping", "local"): 1},
        ("team", "pool"),
    )
    eventually(
        prom,
        "nuro_ml_capacity_pending_gpus",
        {("perception", "a100"): 2, ("planning", "a100"): 9},
        ("team", "pool"),
    )
    # mapping waited 1.2 s: in the 10 s bucket, and counted once.
    eventually(
        prom,
        'nuro_ml_capacity_admission_wait_seconds_bucket{team="mapping", le=~"10.0|\\\\+Inf"}',
        {("10.0",): 1, ("+Inf",): 1},
        ("le",),
    )
    waited = query(prom, 'nuro_ml_capacity_admission_wait_seconds_sum{team="mapping"}')
    assert 1.0 <= float(waited[0]["value"][1]) < 10.0

    # A task pushes its counters twice (two runs): the Pushgateway group carries them over.
    ti = SimpleNamespace(
        dag_id=DAG_ID,
        task_id="etl",
        map_index=-1,
        task=type("MCAPToParquetOperator", (), {})(),
        start_date=datetime.now(UTC) - timedelta(seconds=5),
        xcom_pull=lambda **kwargs: ETL_RESULT,
    )
    record_task_instance(ti, succeeded=True)
    record_task_instance(ti, succeeded=True)
    eventually(
        prom,
        "nuro_ml_etl_messages_total",
        {(DAG_ID, "etl", "/imu"): 4000},
        ("dag_id", "task_id", "topic"),
    )
    eventually(prom, "nuro_ml_etl_quarantined_files_total", {(DAG_ID, "etl"): 2}, ("dag_id", "task_id"))
    last = query(prom, "nuro_ml_task_last_success_timestamp_seconds")
    assert abs(float(last[0]["value"][1]) - time.time()) < 60

    # Every dashboard query is valid PromQL for this Prometheus, and most return data.
    for expr in dashboard_queries():
        concrete = expr.replace("$__rate_interval", "1m").replace("$__range", "1h")
        query(prom, concrete)

    # No series of ours carries an unbounded label.
    selector = urllib.parse.urlencode({"match[]": '{__name__=~"nuro_ml_.*"}'})
    series = _get(f"{prom}/api/v1/series?{selector}")["data"]
    assert len(series) > 20
    for labels in series:
        names = set(labels) - {"__name__", "job"}
        assert names <= cat.ALLOWED_LABELS, labels
        assert not [v for v in labels.values() if "/run_" in v or "manual__" in v], labels
