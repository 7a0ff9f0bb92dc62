"""Daily Terraform drift check of the platform's environments.

Runs ``terraform plan -detailed-exitcode`` against each environment's state without changing
anything; a task fails (and alerts like any failed task) when real infrastructure or the
configuration has drifted from the state. The XCom of each check holds the drift summary:
which resource addresses would be added, changed, replaced or destroyed.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, Param
from nuro_ml import settings
from nuro_ml.operators.terraform import TerraformDriftCheckOperator

DAG_ID = "terraform_drift_check"

with DAG(
    dag_id=DAG_ID,
    description="Detect drift between Terraform state and real infrastructure",
    schedule="0 6 * * *",
    start_date=datetime(2026, 11, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    tags=["nuro-ml", "terraform", "platform"],
    default_args={"owner": "ml-platform", "retries": 1, "retry_delay": timedelta(minutes=1)},
    doc_md=__doc__,
    params={
        "workspace": Param("default", type="string", pattern="^[A-Za-z0-9_-]+$", title="Workspace"),
    },
) as dag:
    # The local environment is created and destroyed by each training run with run-specific
    # variables, so only drift of what the state holds against reality is meaningful here.
    TerraformDriftCheckOperator(
        task_id="drift_local",
        working_dir=str(settings.terraform_dir() / "environments" / "local"),
        workspace="{{ params.workspace }}",
        variables={"python": sys.executable},
        refresh_only=True,
        fail_on_drift=True,
        lock_timeout="5m",
    )
