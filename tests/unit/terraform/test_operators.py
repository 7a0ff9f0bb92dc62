"""Operator arguments, templating and kill handling that need no Terraform run."""

from __future__ import annotations

import pytest
from nuro_ml.operators.terraform import (
    TerraformApplyOperator,
    TerraformDestroyOperator,
    TerraformDriftCheckOperator,
    TerraformPlanOperator,
)
from nuro_ml.task_key import TaskKey

OPERATORS = [
    TerraformPlanOperator,
    TerraformApplyOperator,
    TerraformDestroyOperator,
    TerraformDriftCheckOperator,
]


@pytest.mark.parametrize("operator_class", OPERATORS)
def test_connection_ids_paths_and_variables_are_templated(operator_class):
    fields = set(operator_class.template_fields)

    assert {
        "working_dir",
        "terraform_conn_id",
        "backend_conn_id",
        "workspace",
        "variables",
        "backend_config",
        "environment",
    } <= fields
    doc = operator_class.__doc__ or ""
    for name in (
        "working_dir",
        "terraform_conn_id",
        "backend_conn_id",
        "workspace",
        "variables",
        "lock_timeout",
        "kill_grace_period",
    ):
        assert f":param {name}:" in doc


def test_apply_templates_the_reviewed_plan_path():
    assert "plan_file" in TerraformApplyOperator.template_fields
    assert ":param plan_file:" in (TerraformApplyOperator.__doc__ or "")


def test_arguments_are_keyword_only():
    with pytest.raises(TypeError):
        TerraformApplyOperator("apply", "/env")  # type: ignore[misc]


def test_on_kill_before_execute_is_harmless():
    operator = TerraformDestroyOperator(task_id="destroy", working_dir="/env")

    operator.on_kill()

    assert operator._killed


def test_on_kill_logs_instead_of_raising(tmp_path):
    class BrokenHook:
        working_dir = tmp_path

        def interrupt(self, *, grace_period: float) -> bool:
            raise OSError("no such process")

    operator = TerraformApplyOperator(task_id="apply", working_dir=str(tmp_path))
    operator._hook = BrokenHook()  # type: ignore[assignment]

    operator.on_kill()

    assert operator._killed


def test_run_key_comes_from_the_task_instance(tmp_path):
    class TI:
        dag_id, run_id, task_id, map_index = "d", "manual__1", "t", 2

    operator = TerraformPlanOperator(task_id="t", working_dir=str(tmp_path))
    assert operator.build_hook({"ti": TI()}).run_key == TaskKey("d", "manual__1", "t", 2)  # type: ignore[arg-type]


def test_hook_gets_the_rendered_arguments(tmp_path):
    class TI:
        dag_id, run_id, task_id, map_index = "d", "r", "plan", -1

    operator = TerraformPlanOperator(
        task_id="plan",
        working_dir=str(tmp_path),
        workspace="team-a",
        variables={"num_gpus": 2},
        environment="lab",
        lock_timeout="30s",
    )
    hook = operator.build_hook({"ti": TI()})  # type: ignore[arg-type]

    assert (hook.working_dir, hook.workspace, hook.environment, hook.lock_timeout) == (
        tmp_path,
        "team-a",
        "lab",
        "30s",
    )
    assert hook.variables == {"num_gpus": 2}
    assert hook.default_plan_file().name == "plan.tfplan"
    assert hook.default_plan_file().parent.name == "r"
