"""Airflow listener: when a task or DAG run ends, record what it did (see :mod:`.tasks`).

Registered by the plugin (``listeners``), so operators need no metrics code: the task's
XCom return value already carries its figures (ETL counts, rows materialized, drift). Task
hooks run in the worker process that ran the task; the DAG-run hook runs in the scheduler
and pushes the DAG's last success, which the "no successful run in 26 h" alert reads.
Listeners must never break the task, so every failure here is logged and swallowed.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from airflow.listeners import hookimpl

from nuro_ml.metrics import catalogue as cat
from nuro_ml.metrics.tasks import RESULT_EXTRACTORS, Sample, now, record, task_samples

log = logging.getLogger(__name__)


def _duration(task_instance: Any) -> float | None:
    start = getattr(task_instance, "start_date", None)
    if not isinstance(start, datetime):
        return None
    return max(0.0, (datetime.now(UTC) - start).total_seconds())


def _result(task_instance: Any) -> Any:
    try:
        return task_instance.xcom_pull(
            task_ids=task_instance.task_id, key="return_value", map_indexes=task_instance.map_index
        )
    except Exception:
        log.debug("No return value readable for %s", task_instance.task_id, exc_info=True)
        return None


def record_task_instance(task_instance: Any, *, succeeded: bool) -> None:
    """Build and send the samples of one finished task instance."""
    task = getattr(task_instance, "task", None)
    operator_class = type(task).__name__ if task is not None else ""
    # Only operators whose result carries figures are read back: other results may be large.
    result = _result(task_instance) if succeeded and operator_class in RESULT_EXTRACTORS else None
    samples = task_samples(
        operator_class, result, succeeded=succeeded, duration=_duration(task_instance), ended_at=now()
    )
    record(samples, dag_id=task_instance.dag_id, task_id=task_instance.task_id)


@hookimpl
def on_task_instance_success(previous_state: Any, task_instance: Any) -> None:
    try:
        record_task_instance(task_instance, succeeded=True)
    except Exception:
        log.warning("Task metrics of %s not recorded", getattr(task_instance, "task_id", "?"), exc_info=True)


@hookimpl
def on_task_instance_failed(previous_state: Any, task_instance: Any, error: Any) -> None:
    try:
        record_task_instance(task_instance, succeeded=False)
    except Exception:
        log.warning("Task metrics of %s not recorded", getattr(task_instance, "task_id", "?"), exc_info=True)


@hookimpl
def on_dag_run_success(dag_run: Any, msg: str) -> None:
    try:
        record([Sample(cat.DAG_LAST_SUCCESS, now())], dag_id=dag_run.dag_id)
    except Exception:
        log.warning("DAG metrics of %s not recorded", getattr(dag_run, "dag_id", "?"), exc_info=True)
