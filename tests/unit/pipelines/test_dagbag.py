"""Airflow's DagBag loads one DAG per valid spec; broken specs are the check file's import error."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from airflow.dag_processing.dagbag import DagBag
from nuro_ml.settings import REPO_ROOT

LOADER = REPO_ROOT / "dags" / "yaml_pipelines.py"
CHECK = REPO_ROOT / "dags" / "yaml_pipelines_check.py"

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
    shutil.copy(CHECK, folder / "yaml_pipelines_check.py")
    for dag_id in ("alpha", "beta"):
        (folder / "pipelines" / f"{dag_id}.yaml").write_text(GOOD.format(dag_id=dag_id))
    for name, (text, _) in BROKEN.items():
        (folder / "pipelines" / name).write_text(text)
    return folder


def rewrite(path: Path, text: str) -> None:
    """Replace a file's text with a newer modification time, as an edit in an editor would."""
    path.write_text(text)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


def test_good_specs_load_and_broken_specs_are_listed_in_the_check_files_import_error(dags_folder):
    bag = DagBag(dag_folder=str(dags_folder))

    assert set(bag.dag_ids) == {"alpha", "beta"}
    assert bag.dags["alpha"].get_task("train").upstream_task_ids == {"extract"}
    # The loader itself imports cleanly, so the DAGs it defines stay active.
    assert set(bag.import_errors) == {str(dags_folder / "yaml_pipelines_check.py")}
    error = bag.import_errors[str(dags_folder / "yaml_pipelines_check.py")]
    assert "PipelineSpecError: Invalid pipeline specs (5 problems in pipelines/cycle.yaml, " in error
    for _, message in BROKEN.values():
        assert f"\npipelines/{message}" in error
    assert "alpha.yaml" not in error and "beta.yaml" not in error


def test_the_import_error_is_keyed_by_the_check_files_bundle_path(dags_folder):
    bag = DagBag(dag_folder=str(dags_folder), bundle_path=dags_folder, bundle_name="dags-folder")

    assert set(bag.import_errors) == {"yaml_pipelines_check.py"}
    assert (
        "pipelines/cycle.yaml:5:24: stages.b.depends_on: dependency cycle"
        in bag.import_errors["yaml_pipelines_check.py"]
    )
    for dag in bag.dags.values():
        assert dag.relative_fileloc == "yaml_pipelines.py"


def test_fixed_and_removed_specs_leave_the_error_and_the_last_one_clears_it(dags_folder):
    check = str(dags_folder / "yaml_pipelines_check.py")
    specs = dags_folder / "pipelines"

    rewrite(specs / "wrong_type.yaml", GOOD.format(dag_id="wrong_type"))
    (specs / "syntax.yaml").unlink()
    bag = DagBag(dag_folder=str(dags_folder))

    assert "wrong_type" in bag.dag_ids
    assert "wrong_type.yaml" not in bag.import_errors[check]
    assert "syntax.yaml" not in bag.import_errors[check]
    assert "pipelines/cycle.yaml:5:24" in bag.import_errors[check]

    for name in ("unknown_field.yaml", "operator_param.yaml", "cycle.yaml"):
        (specs / name).unlink()
    bag = DagBag(dag_folder=str(dags_folder))

    assert bag.import_errors == {}
    assert set(bag.dag_ids) == {"alpha", "beta", "wrong_type"}


def test_a_duplicate_dag_id_breaks_only_the_later_file(dags_folder):
    (dags_folder / "pipelines" / "zeta.yaml").write_text(GOOD.format(dag_id="alpha"))

    bag = DagBag(dag_folder=str(dags_folder))

    assert bag.dags["alpha"].fileloc == str(dags_folder / "yaml_pipelines.py")
    error = bag.import_errors[str(dags_folder / "yaml_pipelines_check.py")]
    assert (
        "\npipelines/zeta.yaml:1:9: dag_id: dag_id 'alpha' is already defined by pipelines/alpha.yaml\n"
        in error
    )


def test_the_repository_example_pipelines_load(tmp_path):
    folder = tmp_path / "dags"
    shutil.copytree(REPO_ROOT / "dags" / "pipelines", folder / "pipelines")
    shutil.copy(LOADER, folder / "yaml_pipelines.py")
    shutil.copy(CHECK, folder / "yaml_pipelines_check.py")

    bag = DagBag(dag_folder=str(folder))

    assert bag.import_errors == {}
    assert set(bag.dag_ids) == {"nightly_perception_training", "feature_refresh", "local_env_drift_check"}
    nightly = bag.dags["nightly_perception_training"]
    assert nightly.get_task("teardown").is_teardown
    assert nightly.get_task("release_gpus").is_teardown
    refresh = bag.dags["feature_refresh"]
    assert [asset.name for asset in refresh.timetable.asset_condition.objects] == ["scene_stats"]
