"""Terraform operators: plan, apply, drift check and destroy one root module."""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import DAG
from nuro_ml import settings
from nuro_ml.operators.terraform import (
    TerraformApplyOperator,
    TerraformDestroyOperator,
    TerraformDriftCheckOperator,
    TerraformPlanOperator,
    terraform_plan_and_apply,
)

MODULE = str(settings.terraform_dir() / "environments" / "local")

with DAG(
    dag_id="example_terraform",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["example", "terraform"],
):
    # [START howto_operator_terraform_plan]
    plan = TerraformPlanOperator(
        task_id="plan",
        working_dir=MODULE,
        workspace="{{ dag_run.conf.get('workspace', 'default') }}",
        variables={"num_gpus": 4},
    )
    # [END howto_operator_terraform_plan]

    # [START howto_operator_terraform_apply]
    apply = TerraformApplyOperator(
        task_id="apply",
        working_dir=MODULE,
        plan_file="{{ ti.xcom_pull(task_ids='plan')['plan_file'] }}",
    )
    # [END howto_operator_terraform_apply]

    # [START howto_operator_terraform_drift_check]
    drift = TerraformDriftCheckOperator(
        task_id="drift_check",
        working_dir=MODULE,
        variables={"num_gpus": 4},
        fail_on_drift=True,
    )
    # [END howto_operator_terraform_drift_check]

    # [START howto_operator_terraform_destroy]
    destroy = TerraformDestroyOperator(task_id="destroy", working_dir=MODULE, variables={"num_gpus": 4})
    # [END howto_operator_terraform_destroy]

    plan >> apply >> drift >> destroy.as_teardown(setups=apply)

with DAG(
    dag_id="example_terraform_approval",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["example", "terraform"],
):
    # [START howto_operator_terraform_plan_and_apply]
    provision = terraform_plan_and_apply(
        group_id="provision",
        working_dir=MODULE,
        require_approval_for=["delete", "replace"],
        variables={"num_gpus": 4},
    )
    # [END howto_operator_terraform_plan_and_apply]
