"""Drift checks against a real state: no drift, configuration drift, and the daily DAG."""

from __future__ import annotations

import importlib.util

import pytest
from nuro_ml import settings
from nuro_ml.exceptions import TerraformError
from nuro_ml.operators.terraform import TerraformApplyOperator, TerraformDriftCheckOperator

from tests.integration.terraform.conftest import context_for

pytestmark = pytest.mark.integration

CONFIG = """
variable "size" {
  type    = number
  default = 1
}

resource "null_resource" "pool" {
  triggers = {
    size = var.size
  }
}
"""


def test_drift_is_reported_with_the_affected_addresses(tf_config):
    directory = tf_config(CONFIG)
    common = {"working_dir": str(directory), "variables": {"size": 2}}
    TerraformApplyOperator(task_id="apply", **common).execute(context_for("apply"))

    clean = TerraformDriftCheckOperator(task_id="drift", **common).execute(context_for("drift"))
    assert clean["drift"] is False and clean["summary"]["replace"] == []

    context = context_for("drift")
    changed = TerraformDriftCheckOperator(
        task_id="drift", working_dir=str(directory), variables={"size": 3}, fail_on_drift=True
    )
    with pytest.raises(TerraformError, match=r"drift detected in .*: 0 to add, 0 to change, 1 to replace"):
        changed.execute(context)
    pushed = context["ti"].pushed["return_value"]
    assert pushed["drift"] is True and pushed["summary"]["replace"] == ["null_resource.pool"]

    # Only objects changed outside Terraform count with refresh_only; this state matches reality.
    refreshed = TerraformDriftCheckOperator(
        task_id="drift", working_dir=str(directory), variables={"size": 3}, refresh_only=True
    ).execute(context_for("drift"))
    assert refreshed["drift"] is False


def test_daily_drift_dag_checks_the_local_environment():
    path = settings.REPO_ROOT / "dags" / "terraform_drift_check.py"
    spec = importlib.util.spec_from_file_location("terraform_drift_check_dag", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    task = module.dag.get_task("drift_local")
    assert isinstance(task, TerraformDriftCheckOperator)
    assert task.refresh_only and task.fail_on_drift
    report = TerraformDriftCheckOperator(
        task_id="drift_local",
        working_dir=task.working_dir,
        environment="drift-dag-it",
        variables=task.variables,
        refresh_only=True,
    ).execute(context_for("drift_local"))
    assert report["drift"] is False and report["environment"] == "drift-dag-it"
