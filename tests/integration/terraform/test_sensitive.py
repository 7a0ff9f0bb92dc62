"""Secret variables and sensitive outputs stay out of task logs and XCom."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path

import pytest
from nuro_ml.hooks.masking import redact_text
from nuro_ml.operators.terraform import TerraformApplyOperator, TerraformPlanOperator

from tests.integration.terraform.conftest import context_for

pytestmark = pytest.mark.integration

SECRET = "it-secret-token-8c1f2"

CONFIG = """
variable "token" {
  type      = string
  sensitive = true
}

variable "label" {
  type    = string
  default = "public-label"
}

resource "null_resource" "uses_secret" {
  triggers = {
    label = var.label
  }

  provisioner "local-exec" {
    command = "echo provisioned ${var.label}"
  }
}

output "public" {
  value = null_resource.uses_secret.triggers.label
}

output "api_key" {
  value     = "${var.token}-derived"
  sensitive = true
}

output "credentials" {
  value = {
    user     = "svc-terraform"
    password = "${var.token}-pw"
  }
  sensitive = true
}
"""


def test_secrets_never_reach_logs_or_xcom(tf_config, monkeypatch, caplog, capsys):
    directory = tf_config(CONFIG)
    monkeypatch.setenv(
        "AIRFLOW_CONN_TF_SECRETS_IT",
        json.dumps({"conn_type": "terraform", "extra": {"secret_variables": {"token": SECRET}}}),
    )
    caplog.set_level(logging.DEBUG)
    common = {"working_dir": str(directory), "terraform_conn_id": "tf_secrets_it"}

    plan = TerraformPlanOperator(task_id="plan", **common).execute(context_for("plan"))
    outputs = TerraformApplyOperator(
        task_id="apply", plan_file=plan["plan_file"], keep_plan_file=True, **common
    ).execute(context_for("apply"))

    assert outputs == {"public": "public-label"}
    assert SECRET not in json.dumps(plan)
    assert plan["summary"]["outputs"] == {"api_key": "create", "credentials": "create", "public": "create"}
    task_log = caplog.text + capsys.readouterr().out
    assert "null_resource.uses_secret (local-exec): provisioned public-label" in task_log
    assert "api_key = (sensitive)" in task_log and "credentials = (sensitive)" in task_log
    assert SECRET not in task_log
    assert "svc-terraform" not in task_log
    # Values first seen in `terraform output` are registered with the masker too.
    redacted = redact_text(f"leak {SECRET}-derived {SECRET}-pw svc-terraform")
    assert SECRET not in redacted and "svc-terraform" not in redacted
    # The saved plan holds variable values: only its owner may read it.
    assert stat.S_IMODE(Path(plan["plan_file"]).stat().st_mode) == 0o600
