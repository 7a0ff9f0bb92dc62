"""Failures surface as TerraformError with Terraform's own diagnostics, and nothing is applied."""

from __future__ import annotations

import logging
import threading

import pytest
from nuro_ml.exceptions import StalePlanError, TerraformError, TerraformStateLockedError
from nuro_ml.hooks.terraform import TerraformHook
from nuro_ml.operators.terraform import TerraformApplyOperator, TerraformPlanOperator

from tests.integration.terraform.conftest import context_for, state_of
from tests.polling import wait_for

pytestmark = pytest.mark.integration

SLEEPER = """
variable "seconds" {
  type    = number
  default = 3
}

variable "label" {
  type    = string
  default = "one"
}

resource "null_resource" "slow" {
  triggers = {
    label = var.label
  }

  provisioner "local-exec" {
    command = "sleep ${var.seconds}"
  }
}
"""


def resources(environment: str) -> list[str]:
    state = state_of(environment)
    if state is None:
        return []
    return [f"{r['type']}.{r['name']}" for r in state["resources"]]


def test_syntax_error_reports_file_and_line(tf_config):
    directory = tf_config('resource "null_resource" "x" {\n  triggers = {\n    a = \n  }\n}\n')

    with TerraformHook(working_dir=directory) as hook, pytest.raises(TerraformError) as err:
        hook.plan()

    message = str(err.value)
    assert f"terraform init failed in {directory}" in message
    assert "main.tf:3: Error: Invalid expression" in message
    assert resources(directory.name) == []


def test_unsupported_argument_reports_file_line_and_code(tf_config):
    directory = tf_config('resource "null_resource" "x" {\n  bogus = 1\n}\n')

    with TerraformHook(working_dir=directory) as hook, pytest.raises(TerraformError) as err:
        hook.apply()

    assert "main.tf:2:3: Error: Unsupported argument" in str(err.value)
    assert "bogus = 1" in str(err.value)
    assert resources(directory.name) == []


def test_unknown_variable_is_rejected_by_terraform(tf_config):
    directory = tf_config(SLEEPER)

    hook = TerraformHook(working_dir=directory, variables={"secondz": 1})
    with hook, pytest.raises(TerraformError, match="Value for undeclared variable") as err:
        hook.plan()
    assert 'A variable named "secondz" was assigned' in str(err.value)
    assert resources(directory.name) == []


def test_invalid_variable_value_names_the_validation_rule():
    from nuro_ml import settings

    local_env = settings.terraform_dir() / "environments" / "local"
    hook = TerraformHook(working_dir=local_env, environment="invalid-vars", variables={"num_gpus": -1})
    with hook, pytest.raises(TerraformError) as err:
        hook.plan()
    assert "variables.tf:1:1: Error: Invalid value for variable" in str(err.value)
    assert "The num_gpus value must be a whole number >= 0." in str(err.value)


def test_provider_missing_from_mirror(tf_config, tmp_path):
    directory = tf_config(SLEEPER)
    empty_mirror = tmp_path / "empty-mirror"
    empty_mirror.mkdir()

    hook = TerraformHook(working_dir=directory, plugin_dir=empty_mirror)
    with hook, pytest.raises(TerraformError) as err:
        hook.apply()
    assert "hashicorp/null" in str(err.value)
    assert "Failed to query available provider packages" in str(err.value)
    assert resources(directory.name) == []


def test_held_lock_fails_clearly_and_changes_nothing(tf_config):
    directory = tf_config(SLEEPER)
    first = TerraformHook(working_dir=directory, variables={"seconds": 4}, lock_timeout="60s")
    second = TerraformHook(working_dir=directory, variables={"label": "two"}, lock_timeout="0s")
    first.prepare()
    second.prepare()
    outcome: dict[str, object] = {}
    worker = threading.Thread(target=lambda: outcome.setdefault("first", first.apply()))
    worker.start()
    lock_info = first.layout.root / ".terraform.tfstate.lock.info"
    wait_for(lock_info.exists, "the first apply to hold the state lock", timeout=60)

    with pytest.raises(TerraformStateLockedError, match="Error acquiring the state lock"):
        second.apply()
    worker.join()
    first.close()
    second.close()

    assert outcome["first"].added == 1  # type: ignore[attr-defined]
    state = state_of(directory.name)
    assert state is not None
    assert [r["instances"][0]["attributes"]["triggers"]["label"] for r in state["resources"]] == ["one"]


def test_stale_plan_is_refused_and_nothing_applied(tf_config):
    directory = tf_config(SLEEPER)
    common = {"working_dir": str(directory), "variables": {"seconds": 0}}
    reviewed = TerraformPlanOperator(task_id="plan", **common).execute(context_for("plan"))
    assert reviewed["summary"]["add"] == ["null_resource.slow"]
    # Someone else changes the state after the plan was reviewed.
    TerraformApplyOperator(
        task_id="other", working_dir=str(directory), variables={"seconds": 0, "label": "other"}
    ).execute(context_for("other"))

    stale_apply = TerraformApplyOperator(task_id="apply", plan_file=reviewed["plan_file"], **common)
    with pytest.raises(StalePlanError, match="Saved plan is stale"):
        stale_apply.execute(context_for("apply"))

    state = state_of(directory.name)
    assert state is not None
    assert [r["instances"][0]["attributes"]["triggers"]["label"] for r in state["resources"]] == ["other"]


def test_on_kill_interrupts_terraform_and_releases_the_lock(tf_config, caplog):
    directory = tf_config(SLEEPER)
    operator = TerraformApplyOperator(
        task_id="apply", working_dir=str(directory), variables={"seconds": 120}, kill_grace_period=60
    )
    errors: list[BaseException] = []

    def run() -> None:
        try:
            operator.execute(context_for("apply"))
        except BaseException as err:
            errors.append(err)

    caplog.set_level(logging.INFO, logger="nuro_ml.terraform")
    worker = threading.Thread(target=run)
    worker.start()
    wait_for(lambda: "sleep 120" in caplog.text, "the apply to reach its provisioner", timeout=60)
    hook = operator._hook
    assert hook is not None
    lock_info = hook.layout.root / ".terraform.tfstate.lock.info"
    assert lock_info.exists()

    operator.on_kill()
    worker.join(timeout=90)

    assert not worker.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], TerraformError)
    assert "was interrupted" in str(errors[0])
    assert not lock_info.exists()
    # The lock is free: another run gets it at once.
    with TerraformHook(working_dir=directory, variables={"seconds": 0}, lock_timeout="0s") as other:
        other.plan()
