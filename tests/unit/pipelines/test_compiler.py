"""A valid spec becomes the DAG it describes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from airflow.sdk import Asset
from airflow.sdk.definitions.timetables.assets import AssetTriggeredTimetable
from nuro_ml import settings
from nuro_ml.pipelines.loader import compile_file

TRAINING = """\
dag_id: perception_training
description: train it
schedule: "0 3 * * *"
start_date: 2026-11-01
timezone: Europe/Berlin
owner: perception-ml
team: perception
tags: [training]
default_retries: 2
retry_delay: PT1M
max_active_runs: 1
params:
  gpus: {type: integer, default: 2, minimum: 1, maximum: 8, title: GPUs, description: GPUs to train on}
  vehicles: {type: array, default: [veh-001], items: {type: string}, min_items: 1}
  model: {type: string, default: xgboost, enum: [xgboost, mlp]}
  day: {type: string, default: null, nullable: true, format: date}
  since: {type: string, default: 2026-11-02, format: date}
assets:
  scene_stats: {uri: "file://${etl_output_dir}/scene_stats", extra: {format: parquet}}
stages:
  provision:
    operator: terraform_apply
    args: {working_dir: "${terraform_dir}/environments/local"}
  etl:
    operator: bash
    kind: etl
    produces: [scene_stats]
    args: {bash_command: "echo {{ ds }}", execution_timeout: 600}
  wait_for_gpus:
    operator: gpu_capacity
    depends_on: [provision, etl]
    args:
      gpus: "{{ params.gpus }}"
      pool: "{{ 'local' }}"
  train:
    operator: bash
    kind: train
    depends_on: [wait_for_gpus]
    consumes: [scene_stats]
    retries: 0
    doc: Trains the model.
    args: {bash_command: "echo train"}
  release_gpus:
    operator: gpu_lease_release
    depends_on: [train]
    setups: [wait_for_gpus]
    args: {lease_id: "{{ ti.xcom_pull(task_ids='wait_for_gpus') }}"}
  teardown:
    operator: terraform_destroy
    depends_on: [release_gpus]
    setups: [provision]
    args: {working_dir: "${terraform_dir}/environments/local"}
"""


@pytest.fixture
def training_dag(write_spec):
    dag, issues = compile_file(write_spec(TRAINING))
    assert issues == ()
    return dag


def test_dag_level_settings(training_dag):
    dag = training_dag
    assert dag.dag_id == "perception_training"
    assert dag.description == "train it"
    assert dag.max_active_runs == 1
    assert dag.catchup is False
    assert dag.render_template_as_native_obj is True
    assert set(dag.tags) == {"yaml-pipeline", "training", "team:perception"}
    assert dag.start_date == datetime(2026, 10, 31, 23, 0, tzinfo=UTC)  # midnight in Berlin
    assert dag.timetable.expression == "0 3 * * *"
    assert str(dag.timetable.timezone) == "Europe/Berlin"
    assert dag.owner == "perception-ml"


def test_stages_become_tasks_wired_by_depends_on(training_dag):
    dag = training_dag
    assert set(dag.task_dict) == {"provision", "etl", "wait_for_gpus", "train", "release_gpus", "teardown"}
    assert dag.get_task("wait_for_gpus").upstream_task_ids == {"provision", "etl"}
    assert dag.get_task("train").upstream_task_ids == {"wait_for_gpus"}
    assert dag.get_task("teardown").upstream_task_ids == {"release_gpus", "provision"}


def test_teardown_stages_become_airflow_teardowns_of_their_setups(training_dag):
    dag = training_dag
    release, destroy = dag.get_task("release_gpus"), dag.get_task("teardown")
    assert release.is_teardown and destroy.is_teardown
    assert dag.get_task("wait_for_gpus").is_setup and dag.get_task("provision").is_setup
    assert "wait_for_gpus" in release.upstream_task_ids
    assert release.trigger_rule == "all_done_setup_success"
    assert not dag.get_task("train").is_teardown


def test_retries_and_docs_per_stage(training_dag):
    dag = training_dag
    assert dag.get_task("etl").retries == 2
    assert dag.get_task("etl").retry_delay == timedelta(minutes=1)
    assert dag.get_task("train").retries == 0
    assert dag.get_task("train").doc_md == "Trains the model."


def test_arguments_are_converted_to_the_operators_annotated_types(training_dag):
    assert training_dag.get_task("etl").execution_timeout == timedelta(seconds=600)


def test_placeholders_expand_to_platform_paths(training_dag):
    provision = training_dag.get_task("provision")
    assert provision.working_dir == f"{settings.terraform_dir()}/environments/local"


def test_team_is_passed_to_operators_that_take_one(training_dag):
    sensor = training_dag.get_task("wait_for_gpus")
    assert sensor.team == "perception"
    assert sensor.gpus == "{{ params.gpus }}"


def test_params_become_typed_airflow_params(training_dag):
    params = training_dag.params
    gpus = params.get_param("gpus")
    assert gpus.value == 2
    assert gpus.schema == {"type": "integer", "title": "GPUs", "minimum": 1, "maximum": 8}
    assert gpus.description == "GPUs to train on"
    assert params.get_param("vehicles").schema == {
        "type": "array",
        "items": {"type": "string"},
        "minItems": 1,
    }
    assert params.get_param("model").schema["enum"] == ["xgboost", "mlp"]
    assert params.get_param("day").schema == {"type": ["string", "null"], "format": "date"}
    assert params.get_param("day").value is None
    assert params.get_param("since").value == "2026-11-02"  # a YAML date becomes the form's ISO string


def test_produced_and_consumed_assets_are_outlets_and_inlets(training_dag):
    expected = Asset(
        name="scene_stats", uri=f"file://{settings.etl_output_dir()}/scene_stats", extra={"format": "parquet"}
    )
    assert training_dag.get_task("etl").outlets == [expected]
    assert training_dag.get_task("train").inlets == [expected]


def test_asset_schedule_makes_the_dag_data_aware(write_spec):
    dag, issues = compile_file(
        write_spec(
            """\
            dag_id: refresh
            start_date: 2026-11-01
            schedule: {assets: [scenes, labels], mode: any}
            assets:
              scenes: {uri: "file:///data/scenes"}
              labels: null
            stages:
              a: {operator: empty}
            """
        )
    )
    assert issues == ()
    assert isinstance(dag.timetable, AssetTriggeredTimetable)
    condition = dag.timetable.asset_condition
    assert type(condition).__name__ == "AssetAny"
    assert {(a.name, a.uri) for a in condition.objects} == {
        ("scenes", "file:///data/scenes"),
        ("labels", "labels"),
    }


def test_a_stage_the_operator_rejects_is_reported_at_the_stage(write_spec):
    path = write_spec(
        """\
        dag_id: bad_trigger_rule
        start_date: 2026-11-01
        stages:
          a:
            operator: empty
            args: {trigger_rule: sometimes}
        """
    )
    dag, [issue] = compile_file(path)
    assert dag is None
    assert (issue.line, issue.column, issue.field) == (4, 3, "stages.a")
    assert "EmptyOperator rejected the stage" in issue.message
    assert "sometimes" in issue.message
