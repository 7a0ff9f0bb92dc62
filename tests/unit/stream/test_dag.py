"""The ``telemetry_stream`` DAG loads and wires start, watch and restart."""

from __future__ import annotations

from airflow.dag_processing.dagbag import DagBag
from nuro_ml.operators.stream import StartTelemetryStreamOperator, StopTelemetryStreamOperator
from nuro_ml.sensors.stream import StreamHealthSensor
from nuro_ml.settings import REPO_ROOT


def test_telemetry_stream_dag_supervises_the_stream() -> None:
    bag = DagBag(dag_folder=str(REPO_ROOT / "dags" / "telemetry_stream.py"))
    assert bag.import_errors == {}
    dag = bag.dags.get("telemetry_stream")
    assert dag is not None
    ensure, watch, restart = (dag.get_task(t) for t in ("ensure_stream", "watch_stream", "restart_stream"))
    assert isinstance(ensure, StartTelemetryStreamOperator)
    assert isinstance(watch, StreamHealthSensor) and watch.soft_fail
    assert isinstance(restart, StartTelemetryStreamOperator) and restart.restart_stalled
    assert isinstance(dag.get_task("stop_stream"), StopTelemetryStreamOperator)
    assert watch.upstream_task_ids == {"ensure_stream"}
    assert restart.upstream_task_ids == {"watch_stream"}
    assert ensure.config["state_dir"] == watch.state_dir
