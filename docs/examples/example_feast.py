"""Apply the Feast repository and materialize the run's interval into the online store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG
from nuro_ml.operators.feast import FeastApplyOperator, FeastMaterializeOperator, FeastPushOperator

with DAG(
    dag_id="example_feast",
    schedule="@daily",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["example", "feast"],
):
    # [START howto_operator_feast_apply]
    apply = FeastApplyOperator(task_id="feast_apply", feast_conn_id="feast_default")
    # [END howto_operator_feast_apply]

    # [START howto_operator_feast_materialize]
    materialize = FeastMaterializeOperator(
        task_id="feast_materialize",
        start="{{ data_interval_start }}",
        end="{{ data_interval_end }}",
        lookback=timedelta(days=1),
        feature_views=["scene_ego_motion"],
    )
    # [END howto_operator_feast_materialize]

    # [START howto_operator_feast_push]
    push = FeastPushOperator(
        task_id="feast_push",
        push_source_name="scene_ego_motion_push",
        data="/data/stream/scene_stats/{{ ds }}",
        to="online",
    )
    # [END howto_operator_feast_push]

    apply >> materialize >> push
