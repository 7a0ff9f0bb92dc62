"""Plan, gate and apply a Terraform configuration named by the run's params.

Each run says where the configuration lives (``working_dir``), where its state is kept
(``state_dir``, for the local backend) and the value of the ``trigger`` input variable, so one
DAG serves any number of isolated environments. Providers come from the repository's
``.terraform-plugins`` mirror; nothing is downloaded.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param
from nuro_ml.operators.terraform import terraform_plan_and_apply
from nuro_ml.terraform_support.plugins import default_plugin_dir

with DAG(
    dag_id="terraform_approval",
    schedule=None,
    catchup=False,
    max_active_runs=1,
    tags=["terraform"],
    params={
        "working_dir": Param("", type="string", description="Root module directory"),
        "state_dir": Param("", type="string", description="Directory of the local state"),
        "trigger": Param("initial", type="string", description="Changing it replaces null_resource.gate"),
    },
):
    terraform_plan_and_apply(
        group_id="infra",
        working_dir="{{ params.working_dir }}",
        variables={"trigger": "{{ params.trigger }}"},
        backend_config={"path": "{{ params.state_dir }}/terraform.tfstate"},
        plugin_dir=str(default_plugin_dir()),
    )
