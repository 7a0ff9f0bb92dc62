"""Supervise the telemetry stream: keep it running, restart it from its checkpoint when it fails.

Every run makes sure the stream runs (starting it if not), then watches its progress record in
the triggerer; when the stream dies or stalls, the watch finishes and the stream is restarted
from its checkpoint. A run that sees a healthy stream for its whole interval ends with the
watch and the restart skipped, and the next run takes over.

Batch DAGs gate on the stream with ``StreamWatermarkSensor(state_dir=STATE_DIR)``; the stream
is stopped on purpose with the ``stop_stream`` task (triggered manually with ``stop=true``).

By default the stream pushes online into the platform's own feature repository
(``feature_repo/``, which carries ``vehicle_live_state``; each run applies it first), and every
run rebuilds that view's offline table (``refresh_live_state``): batch partitions first, the
stream's rows after them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.python import ShortCircuitOperator
from airflow.sdk import DAG, Param
from nuro_ml import settings
from nuro_ml.operators.feast import FeastApplyOperator
from nuro_ml.operators.stream import (
    RefreshLiveStateOperator,
    StartTelemetryStreamOperator,
    StopTelemetryStreamOperator,
)
from nuro_ml.sensors.stream import StreamHealthSensor

DAG_ID = "telemetry_stream"
ROOT = settings.stream_dir()
STATE_DIR = str(ROOT / "state")
WATCH = timedelta(hours=1)

STREAM_CONFIG = {
    "output_path": str(settings.etl_output_dir()),
    "checkpoint_path": str(ROOT / "checkpoint"),
    "state_dir": STATE_DIR,
    "landing_path": str(ROOT / "landing"),
    "redis_url": "{{ params.redis_url or None }}",
    "feature_repo": "{{ params.feature_repo or None }}",
}


def _stop_requested(params: dict[str, Any]) -> bool:
    return bool(params["stop"])


def _supervise(params: dict[str, Any]) -> bool:
    return not params["stop"]


with DAG(
    dag_id=DAG_ID,
    description="Keep the telemetry stream running; restart it from its checkpoint when it stalls or dies",
    schedule=WATCH,
    start_date=datetime(2026, 12, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    render_template_as_native_obj=True,
    tags=["nuro-ml", "streaming", "etl"],
    default_args={"owner": "ml-platform", "retries": 1, "retry_delay": timedelta(minutes=1)},
    doc_md=__doc__,
    params={
        "redis_url": Param("", type="string", title="Redis URL of the live-record stream (empty: none)"),
        "feature_repo": Param(
            str(settings.feature_repo_dir()),
            type="string",
            title="Feast repository with the stream views (nuro_ml.features.stream_views); empty: none",
            description="The platform's feature_repo/ carries them; each run applies the repository.",
        ),
        "stop": Param(False, type="boolean", title="Stop the stream instead of supervising it"),
    },
) as dag:
    stopping = ShortCircuitOperator(
        task_id="stop_requested",
        python_callable=_stop_requested,
        ignore_downstream_trigger_rules=False,
    )
    stop = StopTelemetryStreamOperator(task_id="stop_stream", state_dir=STATE_DIR)
    supervising = ShortCircuitOperator(
        task_id="supervise",
        python_callable=_supervise,
        ignore_downstream_trigger_rules=False,
    )
    # The stream refuses a registry without its push source: apply first (idempotent).
    apply_features = FeastApplyOperator(
        task_id="apply_features", repo_path="{{ params.feature_repo or None }}"
    )
    ensure = StartTelemetryStreamOperator(task_id="ensure_stream", config=STREAM_CONFIG)
    watch = StreamHealthSensor(
        task_id="watch_stream",
        state_dir=STATE_DIR,
        stall_after=300,
        timeout=WATCH.total_seconds(),
        soft_fail=True,
    )
    restart = StartTelemetryStreamOperator(
        task_id="restart_stream", config=STREAM_CONFIG, restart_stalled=True, stall_after=300
    )
    refresh = RefreshLiveStateOperator(task_id="refresh_live_state", output_path=STREAM_CONFIG["output_path"])
    done = EmptyOperator(task_id="done", trigger_rule="none_failed")

    stopping >> stop >> done
    supervising >> apply_features >> ensure >> watch >> restart >> done
    supervising >> refresh >> done
