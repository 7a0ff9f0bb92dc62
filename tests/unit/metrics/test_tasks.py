"""Task metrics from operators' return values, and Airflow's StatsD path carrying them."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.observability import stats
from airflow.sdk.observability.metrics import stats_utils
from nuro_ml.metrics import catalogue as cat
from nuro_ml.metrics import listener
from nuro_ml.metrics.tasks import Sample, task_samples

ETL_RESULT = {
    "files": 3,
    "bytes": 123_456,
    "partitions": ["date=2026-03-01/vehicle=v1"],
    "quarantined": [{"file": "bad.mcap", "reason": "truncated", "offset": 10}],
    "messages": {"/pose": 500, "/imu": 2000},
    "rows": {"pose": 500},
}
MATERIALIZE_RESULT = {
    "rows": {"ego_motion": 1200, "lidar_stats": 300},
    "rows_total": 1500,
    "cache_hits": 2,
    "cache_misses": 1,
    "cache": {"ego_motion": {"hits": 2, "misses": 0}, "lidar_stats": {"hits": 0, "misses": 1}},
}


def _by_name(samples: list[Sample]) -> dict[tuple[str, tuple[str, ...]], float]:
    return {(s.series.name, s.labels): s.value for s in samples}


def test_etl_result_becomes_message_byte_and_quarantine_counters() -> None:
    found = _by_name(
        task_samples("MCAPToParquetOperator", ETL_RESULT, succeeded=True, duration=12.5, ended_at=1e9)
    )
    assert found[("nuro_ml_etl_messages", ("/imu",))] == 2000
    assert found[("nuro_ml_etl_bytes", ())] == 123_456
    assert found[("nuro_ml_etl_quarantined_files", ())] == 1
    assert found[("nuro_ml_task_last_success_timestamp_seconds", ())] == 1e9
    assert found[("nuro_ml_task_duration_seconds", ())] == 12.5


def test_materialize_and_training_and_drift() -> None:
    found = _by_name(
        task_samples("FeastMaterializeOperator", MATERIALIZE_RESULT, succeeded=True, duration=1, ended_at=1)
    )
    assert found[("nuro_ml_materialized_rows", ("lidar_stats",))] == 300
    assert found[("nuro_ml_feature_cache_hits", ("ego_motion",))] == 2
    assert found[("nuro_ml_feature_cache_misses", ("lidar_stats",))] == 1

    failed = _by_name(task_samples("RayJobOperator", None, succeeded=False, duration=30, ended_at=5))
    assert failed[("nuro_ml_training_jobs", ("ray", "failed"))] == 1
    assert failed[("nuro_ml_training_job_seconds", ("ray", "failed"))] == 30
    assert failed[("nuro_ml_task_last_failure_timestamp_seconds", ())] == 5

    drift = _by_name(
        task_samples(
            "TerraformDriftCheckOperator",
            {"drift": True, "environment": "aws"},
            succeeded=True,
            duration=None,
            ended_at=1,
        )
    )
    assert drift[("nuro_ml_terraform_drift_detected", ("aws",))] == 1


def test_every_pushed_series_has_a_stats_name_and_bounded_labels() -> None:
    for series in cat.PUSHED:
        assert series.stats_name, series.name
        assert not set(series.labels) & cat.FORBIDDEN_LABELS
    with pytest.raises(ValueError, match="takes labels"):
        Sample(cat.ETL_MESSAGES, 1.0)


@pytest.fixture
def statsd(monkeypatch) -> Any:
    """A StatsD server on loopback (a UDP socket) and Airflow's Stats pointed at it."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(5)
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_ON", "True")
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_HOST", "127.0.0.1")
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_PORT", str(server.getsockname()[1]))
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_PREFIX", "airflow")
    # Tags in the line (InfluxDB style), so the test sees the labels StatsD exporters map.
    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_INFLUXDB_ENABLED", "True")
    monkeypatch.delenv("NURO_ML_PUSHGATEWAY_URL", raising=False)
    stats.initialize(factory=stats_utils.get_stats_factory(), export_legacy_names=False)
    yield server
    stats.initialize(factory=stats_utils.NoStatsLogger, export_legacy_names=False)
    server.close()


def _received(server: socket.socket, wanted: int) -> list[str]:
    lines: list[str] = []
    while len(lines) < wanted:
        try:
            data = server.recv(65536)
        except TimeoutError:
            break
        lines.extend(data.decode().splitlines())
    return lines


def test_listener_sends_the_task_counters_through_airflows_statsd(statsd) -> None:
    ti = SimpleNamespace(
        dag_id="av_training_pipeline",
        task_id="etl",
        map_index=-1,
        task=type("MCAPToParquetOperator", (), {})(),
        start_date=datetime.now(UTC) - timedelta(seconds=3),
        xcom_pull=lambda **kwargs: ETL_RESULT if kwargs["key"] == "return_value" else None,
    )
    listener.on_task_instance_success(previous_state=None, task_instance=ti)
    lines = _received(statsd, 7)
    text = "\n".join(lines)
    assert "airflow.nuro_ml.etl.messages" in text
    imu = next(line for line in lines if "etl.messages" in line and "topic=/imu" in line)
    assert imu.endswith(":2000|c")
    assert "dag_id=av_training_pipeline" in imu and "task_id=etl" in imu
    assert any(line.startswith("airflow.nuro_ml.etl.bytes") and line.endswith(":123456|c") for line in lines)
    assert any("nuro_ml.task.last_success" in line and line.endswith("|g") for line in lines)


def test_airflow_listener_manager_accepts_and_calls_the_hooks(monkeypatch) -> None:
    """pluggy checks hook argument names against Airflow's specs when the listener is added."""
    from airflow._shared.listeners.listener import ListenerManager
    from airflow._shared.listeners.spec import taskinstance
    from airflow.listeners.spec import dagrun

    recorded: list[tuple[str, str | None, list[Sample]]] = []
    monkeypatch.setattr(
        listener,
        "record",
        lambda samples, *, dag_id, task_id=None: recorded.append((dag_id, task_id, list(samples))),
    )
    # Airflow's own manager, as get_listener_manager() builds it, without other plugins' listeners.
    manager = ListenerManager()
    manager.add_hookspecs(dagrun)
    manager.add_hookspecs(taskinstance)
    manager.add_listener(listener)
    try:
        ti = SimpleNamespace(
            dag_id="train",
            task_id="fit",
            map_index=-1,
            task=type("RayJobOperator", (), {})(),
            start_date=datetime.now(UTC) - timedelta(seconds=42),
            xcom_pull=lambda **kwargs: None,
        )
        manager.hook.on_task_instance_failed(previous_state=None, task_instance=ti, error=RuntimeError("x"))
        manager.hook.on_dag_run_success(dag_run=SimpleNamespace(dag_id="train"), msg="")
    finally:
        manager.pm.unregister(listener)
    (dag, task, samples), (dag_run, no_task, dag_samples) = recorded
    assert (dag, task, dag_run, no_task) == ("train", "fit", "train", None)
    found = _by_name(samples)
    assert found[("nuro_ml_training_jobs", ("ray", "failed"))] == 1
    assert found[("nuro_ml_training_job_seconds", ("ray", "failed"))] >= 42
    assert [s.series for s in dag_samples] == [cat.DAG_LAST_SUCCESS]


def test_the_plugin_registers_the_listener_and_serves_the_metrics_route() -> None:
    from tests.unit.plugins.test_plugin import load_plugin

    plugin = load_plugin()
    assert listener in plugin.listeners
    [entry] = plugin.fastapi_apps
    paths = {getattr(route, "path", "") for route in entry["app"].routes}
    assert "/metrics" in paths and entry["url_prefix"] == "/nuro-ml"


def test_results_of_other_operators_are_not_read_back(monkeypatch) -> None:
    recorded: list[list[Sample]] = []
    monkeypatch.setattr(listener, "record", lambda samples, **kwargs: recorded.append(list(samples)))

    def no_pull(**kwargs: Any) -> Any:
        raise AssertionError("xcom_pull called for an operator without metrics in its result")

    ti = SimpleNamespace(
        dag_id="d", task_id="t", map_index=-1, task=object(), start_date=None, xcom_pull=no_pull
    )
    listener.record_task_instance(ti, succeeded=True)
    assert [s.series for s in recorded[0]] == [cat.LAST_SUCCESS]
