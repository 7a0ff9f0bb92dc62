"""The ``telemetry_stream`` DAG loads and wires start, watch and restart."""

from __future__ import annotations

from airflow.dag_processing.dagbag import DagBag
from nuro_ml import settings
from nuro_ml.operators.stream import (
    RefreshLiveStateOperator,
    StartTelemetryStreamOperator,
    StopTelemetryStreamOperator,
)
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


def test_the_dag_pushes_into_the_platform_repository_and_refreshes_the_live_view() -> None:
    from nuro_ml.features.repo import load_repo_contents

    bag = DagBag(dag_folder=str(REPO_ROOT / "dags" / "telemetry_stream.py"))
    dag = bag.dags["telemetry_stream"]
    repo = dag.params["feature_repo"]
    assert repo == str(settings.feature_repo_dir())
    contents = load_repo_contents(settings.feature_repo_dir(), "nuro_ml")
    pushed = [v.name for v in contents.feature_views if v.stream_source is not None]
    assert pushed == ["vehicle_live_state"]
    assert [e.name for e in contents.entities].count("vehicle") == 1
    push_sources = [s.name for s in contents.data_sources if type(s).__name__ == "PushSource"]
    assert push_sources == ["vehicle_live_push"]
    assert dag.get_task("ensure_stream").upstream_task_ids == {"apply_features"}
    refresh = dag.get_task("refresh_live_state")
    assert isinstance(refresh, RefreshLiveStateOperator)
    assert refresh.output_path == dag.get_task("ensure_stream").config["output_path"]
    assert refresh.upstream_task_ids == {"supervise"} and refresh.downstream_task_ids == {"done"}
