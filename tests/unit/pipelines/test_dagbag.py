"""Airflow's DagBag loads one DAG per spec; each broken spec is its own import error."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from airflow.dag_processing.dagbag import DagBag
from nuro_ml.settings import REPO_ROOT

LOADER = REPO_ROOT / "dags" / "yaml_pipelines.py"

GOOD = """\
dag_id: {dag_id}
start_date: 2026-11-01
schedule: "@daily"
stages:
  extract: {{operator: bash, args: {{bash_command: "echo extract"}}}}
  train: {{operator: bash, depends_on: [extract], args: {{bash_command: "echo train"}}}}
"""

BROKEN = {
    "syntax.yaml": (
        "dag_id: syntax\nstages:\n  a: {operator: empty\n",
        "syntax.yaml:4:1: (yaml): invalid YAML",
    ),
    "unknown_field.yaml": (
        "dag_id: unknown_field\nstart_date: 2026-11-01\nstages:\n  a: {operator: empty, retires: 2}\n",
        "unknown_field.yaml:4:24: stages.a.retires: unknown field 'retires' (did you mean 'retries'?)",
    ),
    "wrong_type.yaml": (
        "dag_id: wrong_type\nstart_date: 2026-11-01\ncatchup: maybe\nstages:\n  a: {operator: empty}\n",
        "wrong_type.yaml:3:10: catchup: expected true or false, got 'maybe'",
    ),
    "operator_param.yaml": (
        "dag_id: operator_param\nstart_date: 2026-11-01\nstages:\n  a:\n    operator: bash\n"
        "    args: {bash_command: echo, timeout_s: 3}\n",
        "operator_param.yaml:6:32: stages.a.args.timeout_s: unknown parameter 'timeout_s' for BashOperator",
    ),
    "cycle.yaml": (
        "dag_id: cycle\nstart_date: 2026-11-01\nstages:\n  a: {operator: empty, depends_on: [b]}\n"
        "  b: {operator: empty, depends_on: [a]}\n",
        "cycle.yaml:5:24: stages.b.depends_on: dependency cycle: b -> a -> b",
    ),
}


@pytest.fixture
def dags_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "dags"
    (folder / "pipelines").mkdir(parents=True)
    shutil.copy(LOADER, folder / "yaml_pipelines.py")
    for dag_id in ("alpha", "beta"):
        (folder / "pipelines" / f"{dag_id}.yaml").write_text(GOOD.format(dag_id=dag_id))
    for name, (text, _) in BROKEN.items():
        (folder / "pipelines" / name).write_text(text)
    return folder


def test_good_specs_load_and_each_broken_spec_is_its_own_import_error(dags_folder):
    bag = DagBag(dag_folder=str(dags_folder))

    assert set(bag.dag_ids) == {"alpha", "beta"}
    assert bag.dags["alpha"].get_task("train").upstream_task_ids == {"extract"}
    expected_files = {str(dags_folder / "pipelines" / name) for name in BROKEN}
    assert set(bag.import_errors) == expected_files
    for name, (_, message) in BROKEN.items():
        error = bag.import_errors[str(dags_folder / "pipelines" / name)]
        assert error.startswith("Invalid pipeline spec (1 problem):\n")
        assert f"{dags_folder / 'pipelines'}/{message}" in error


def test_import_errors_are_keyed_relative_to_the_bundle_like_any_dag_file(dags_folder):
    bag = DagBag(dag_folder=str(dags_folder), bundle_path=dags_folder, bundle_name="dags-folder")

    assert set(bag.import_errors) == {f"pipelines/{name}" for name in BROKEN}
    assert (
        "pipelines/cycle.yaml:5:24: stages.b.depends_on: dependency cycle"
        in bag.import_errors["pipelines/cycle.yaml"]
    )
    for dag in bag.dags.values():
        assert dag.relative_fileloc == "yaml_pipelines.py"


def test_a_fixed_spec_loads_on_the_next_parse(dags_folder):
    broken = dags_folder / "pipelines" / "wrong_type.yaml"
    assert "wrong_type" not in DagBag(dag_folder=str(dags_folder)).dag_ids

    broken.write_text(GOOD.format(dag_id="wrong_type"))
    stat = broken.stat()
    os.utime(broken, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    bag = DagBag(dag_folder=str(dags_folder))

    assert "wrong_type" in bag.dag_ids
    assert str(broken) not in bag.import_errors


def test_a_duplicate_dag_id_breaks_only_the_later_file(dags_folder):
    (dags_folder / "pipelines" / "zeta.yaml").write_text(GOOD.format(dag_id="alpha"))

    bag = DagBag(dag_folder=str(dags_folder))

    assert bag.dags["alpha"].fileloc == str(dags_folder / "yaml_pipelines.py")
    error = bag.import_errors[str(dags_folder / "pipelines" / "zeta.yaml")]
    assert (
        f"zeta.yaml:1:9: dag_id: dag_id 'alpha' is already defined by {dags_folder}/pipelines/alpha.yaml"
        in error
    )


def test_the_repository_example_pipelines_load(tmp_path):
    folder = tmp_path / "dags"
    shutil.copytree(REPO_ROOT / "dags" / "pipelines", folder / "pipelines")
    shutil.copy(LOADER, folder / "yaml_pipelines.py")

    bag = DagBag(dag_folder=str(folder))

    assert bag.import_errors == {}
    assert set(bag.dag_ids) == {"nightly_perception_training", "feature_refresh", "local_env_drift_check"}
    nightly = bag.dags["nightly_perception_training"]
    assert nightly.get_task("teardown").is_teardown
    assert nightly.get_task("release_gpus").is_teardown
    refresh = bag.dags["feature_refresh"]
    assert [asset.name for asset in refresh.timetable.asset_condition.objects] == ["scene_stats"]
