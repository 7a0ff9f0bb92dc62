"""The main DAG's ``model`` parameter: xgboost by default, torch trains on staged shards."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import TriggerRule

REPO = Path(__file__).resolve().parents[3]
DAG_FILE = REPO / "dags" / "av_training_pipeline.py"


@pytest.fixture(scope="module")
def dag() -> Any:
    spec = importlib.util.spec_from_file_location("av_training_pipeline_under_test", DAG_FILE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


class _TI:
    def __init__(self, xcoms: dict[str, Any]) -> None:
        self.xcoms = xcoms

    def xcom_pull(self, task_ids: str) -> Any:
        return self.xcoms.get(task_ids)


def _render(dag: Any, task_id: str, field: str, params: dict[str, Any], xcoms: dict[str, Any]) -> Any:
    task = dag.get_task(task_id)
    context = {
        "params": {k: v.value if hasattr(v, "value") else v for k, v in dag.params.items()} | params,
        "ti": _TI(xcoms),
        "run_id": "manual__2026-11-24T00:00:00+00:00",
    }
    return task.render_template(getattr(task, field), context, jinja_env=dag.get_template_env())


INTERVAL = {"start": "2026-11-24T00:00:00+00:00", "end": "2026-11-25T00:00:00+00:00", "dates": ["2026-11-24"]}


def test_default_model_is_xgboost_and_needs_no_object_storage(dag) -> None:
    assert dag.params["model"] == "xgboost"
    entry = _render(dag, "train", "entrypoint", {}, {"plan_interval": INTERVAL})
    assert entry.startswith("python train_xgboost.py --start 2026-11-24T00:00:00+00:00")
    assert _render(dag, "train", "env_from_connections", {}, {}) == {}
    # Staging runs as a no-op for xgboost (an empty destination), so training follows it as usual.
    assert _render(dag, "stage_training_shards", "destination", {"shards_uri": "s3://b/p"}, {}) == ""
    train = dag.get_task("train")
    assert train.trigger_rule == TriggerRule.ALL_SUCCESS
    assert "stage_training_shards" in train.upstream_task_ids and "wait_for_gpus" in train.upstream_task_ids


def test_torch_model_trains_on_the_staged_manifest(dag) -> None:
    params = {
        "model": "torch",
        "shards_uri": "s3://fleet-training/brake",
        "aws_conn_id": "shards_s3",
        "epochs": 3,
    }
    staged = {
        "manifest_uri": "s3://fleet-training/brake/manifests/abc.json",
        "endpoint_url": "http://127.0.0.1:9000",
    }
    entry = _render(
        dag, "train", "entrypoint", params, {"plan_interval": INTERVAL, "stage_training_shards": staged}
    )
    assert entry.split(" --output-dir ")[0] == (
        "python train_torch.py --manifest s3://fleet-training/brake/manifests/abc.json"
        " --s3-endpoint-url http://127.0.0.1:9000 --num-workers 2 --gpus-per-worker 1 --epochs 3"
    )
    assert _render(dag, "train", "env_from_connections", params, {}) == {
        "AWS_ACCESS_KEY_ID": "shards_s3:login",
        "AWS_SECRET_ACCESS_KEY": "shards_s3:password",
    }
    stage = dag.get_task("stage_training_shards")
    assert _render(dag, "stage_training_shards", "destination", params, {}) == "s3://fleet-training/brake"
    assert stage.end_is_exclusive is True
    assert stage.upstream_task_ids == {"etl"}


def test_dag_bags_without_errors() -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAG_FILE))
    assert not bag.import_errors, bag.import_errors
    assert "av_training_pipeline" in bag.dags


def test_empty_destination_stages_nothing() -> None:
    from nuro_ml.operators.training_data import StageTrainingShardsOperator

    op = StageTrainingShardsOperator(task_id="stage", destination="", start="2026-11-24", end="2026-11-25")
    assert op.execute({}) is None


def test_end_of_data_interval_is_exclusive() -> None:
    from nuro_ml.operators.training_data import StageTrainingShardsOperator

    op = StageTrainingShardsOperator(
        task_id="stage",
        destination="s3://b/p",
        start="2026-11-24T00:00:00+00:00",
        end="2026-11-26T00:00:00+00:00",
        end_is_exclusive=True,
        vehicles=["veh-001"],
        dataset={"shard_rows": 512},
    )
    spec = op.build_spec()
    assert (spec.start.isoformat(), spec.end.isoformat()) == ("2026-11-24", "2026-11-25")
    assert spec.vehicles == ("veh-001",) and spec.shard_rows == 512


def test_bad_dataset_field_fails_the_task_with_its_name() -> None:
    from nuro_ml.exceptions import TrainingDataError
    from nuro_ml.operators.training_data import StageTrainingShardsOperator

    op = StageTrainingShardsOperator(
        task_id="stage",
        destination="s3://b/p",
        start="2026-11-24",
        end="2026-11-24",
        dataset={"window_ticks": 1},
    )
    with pytest.raises(
        TrainingDataError, match="task stage: dataset spec: window_ticks must be at least 2, got 1"
    ):
        op.build_spec()
