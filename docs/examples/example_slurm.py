"""Submit a GPU batch job to Slurm and wait for it, deferred."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG
from nuro_ml.operators.slurm import SlurmJobOperator

with DAG(
    dag_id="example_slurm",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["example", "slurm"],
):
    # [START howto_operator_slurm_job]
    train = SlurmJobOperator(
        task_id="train",
        slurm_conn_id="slurm_default",
        script="#!/bin/bash\n#SBATCH --ntasks=1\nsrun python train_xgboost.py --num-workers 1\n",
        partition="gpu",
        gpus=1,
        cpus_per_task=4,
        memory="16G",
        time_limit=timedelta(hours=2),
    )
    # [END howto_operator_slurm_job]
