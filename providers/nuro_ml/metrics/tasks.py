"""What a finished task did, as metrics: pushed to a Pushgateway and sent to Airflow's ``Stats``.

:func:`task_samples` turns a task's outcome and XCom return value into samples of the
``PUSHED`` series of :mod:`nuro_ml.metrics.catalogue`, by operator class (ETL messages and
bytes, materialized rows and cache hits, training job time and outcome, drift). The
listener in :mod:`nuro_ml.metrics.listener` calls :func:`record_task` when a task ends, so
no operator has to.

Pushgateway groups are ``{job="nuro_ml", dag_id, task_id}``, never a run: each push
replaces the group, so counters are carried over by adding this run's figures to what the
group holds (read back from the gateway before the push). Two runs of one task pushing in
the same instant can lose one run's increment there; Airflow's StatsD/OpenTelemetry path,
which sends each run's increments, does not.

The gateway is ``NURO_ML_PUSHGATEWAY_URL`` (or ``[nuro_ml] pushgateway_url`` in Airflow's
config); without it only Airflow's ``Stats`` get the figures. A failed push is logged and
never fails the task.
"""

from __future__ import annotations

import logging
import os
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, push_to_gateway
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from nuro_ml.metrics import catalogue as cat
from nuro_ml.metrics.catalogue import Series

log = logging.getLogger(__name__)

JOB = "nuro_ml"
STATS_PREFIX = "nuro_ml"


@dataclass(frozen=True)
class Sample:
    """One value of one series; ``labels`` are the series' label values in order."""

    series: Series
    value: float
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.series.labels):
            raise ValueError(f"{self.series.name} takes labels {self.series.labels}, got {self.labels}")


def _count(value: Any) -> float:
    """A count from a result field: numbers as they are, lists and dicts by their length."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, Sequence | Mapping) and not isinstance(value, str):
        return float(len(value))
    return 0.0


def _etl(result: Mapping[str, Any]) -> list[Sample]:
    samples = [Sample(cat.ETL_MESSAGES, float(n), (str(topic),)) for topic, n in _mapping(result, "messages")]
    samples.append(Sample(cat.ETL_BYTES, _count(result.get("bytes", 0))))
    samples.append(Sample(cat.ETL_FILES, _count(result.get("files", 0))))
    samples.append(Sample(cat.ETL_QUARANTINED, _count(result.get("quarantined", 0))))
    return samples


def _materialize(result: Mapping[str, Any]) -> list[Sample]:
    samples = [Sample(cat.MATERIALIZED_ROWS, float(n), (str(view),)) for view, n in _mapping(result, "rows")]
    for view, counts in _mapping(result, "cache"):
        if isinstance(counts, Mapping):
            samples.append(Sample(cat.CACHE_HITS, _count(counts.get("hits", 0)), (str(view),)))
            samples.append(Sample(cat.CACHE_MISSES, _count(counts.get("misses", 0)), (str(view),)))
    return samples


def _drift(result: Mapping[str, Any]) -> list[Sample]:
    environment = str(result.get("environment") or "default")
    return [Sample(cat.DRIFT, 1.0 if result.get("drift") else 0.0, (environment,))]


def _mapping(result: Mapping[str, Any], key: str) -> list[tuple[Any, Any]]:
    value = result.get(key)
    return sorted(value.items()) if isinstance(value, Mapping) else []


#: Operator class name -> what its XCom return value says (read only on success).
RESULT_EXTRACTORS: dict[str, Callable[[Mapping[str, Any]], list[Sample]]] = {
    "MCAPToParquetOperator": _etl,
    "FeastMaterializeOperator": _materialize,
    "TerraformDriftCheckOperator": _drift,
}
#: Operator class name -> launcher label of the training series.
TRAINING_LAUNCHERS: dict[str, str] = {
    "RayJobOperator": "ray",
    "KubeRayJobOperator": "kuberay",
    "SlurmJobOperator": "slurm",
}


def task_samples(
    operator_class: str, result: Any, *, succeeded: bool, duration: float | None, ended_at: float
) -> list[Sample]:
    """Samples for one finished task of ``operator_class`` (its class name)."""
    samples: list[Sample] = []
    if succeeded and isinstance(result, Mapping) and operator_class in RESULT_EXTRACTORS:
        samples.extend(RESULT_EXTRACTORS[operator_class](result))
    launcher = TRAINING_LAUNCHERS.get(operator_class)
    status = "success" if succeeded else "failed"
    if launcher is not None:
        samples.append(Sample(cat.TRAINING_JOBS, 1.0, (launcher, status)))
        if duration is not None:
            samples.append(Sample(cat.TRAINING_SECONDS, duration, (launcher, status)))
    samples.append(Sample(cat.LAST_SUCCESS if succeeded else cat.LAST_FAILURE, ended_at))
    if duration is not None:
        samples.append(Sample(cat.TASK_SECONDS, duration))
    return samples


# -- Airflow's Stats ----------------------------------------------------------------------


def emit_stats(samples: Iterable[Sample], *, dag_id: str, task_id: str | None = None) -> None:
    """Send samples through Airflow's metrics (StatsD or OpenTelemetry, per ``[metrics]``)."""
    from airflow.sdk.observability import stats

    for sample in samples:
        name = f"{STATS_PREFIX}.{sample.series.stats_name}"
        tags = {"dag_id": dag_id, **dict(zip(sample.series.labels, sample.labels, strict=True))}
        if task_id is not None:
            tags["task_id"] = task_id
        if sample.series.kind == "counter":
            stats.incr(name, round(sample.value), tags=tags)
        else:
            stats.gauge(name, sample.value, tags=tags)


# -- Pushgateway --------------------------------------------------------------------------


def pushgateway_url() -> str | None:
    """The configured Pushgateway (``NURO_ML_PUSHGATEWAY_URL`` or ``[nuro_ml] pushgateway_url``)."""
    url = os.environ.get("NURO_ML_PUSHGATEWAY_URL")
    if url:
        return url
    try:
        from airflow.configuration import conf

        return conf.get("nuro_ml", "pushgateway_url", fallback=None) or None
    except Exception:
        return None


def _grouping(dag_id: str, task_id: str | None) -> dict[str, str]:
    return {"dag_id": dag_id} if task_id is None else {"dag_id": dag_id, "task_id": task_id}


def _held_counters(
    gateway: str, grouping: Mapping[str, str], timeout: float
) -> dict[tuple[str, tuple[str, ...]], float]:
    """Counter values the gateway holds for this group (name without ``_total``, label values)."""
    url = gateway if "://" in gateway else f"http://{gateway}"
    with urllib.request.urlopen(f"{url.rstrip('/')}/metrics", timeout=timeout) as response:
        text = response.read().decode()
    wanted = {"job": JOB, **grouping}
    held: dict[tuple[str, tuple[str, ...]], float] = {}
    by_name = {s.name: s for s in cat.PUSHED if s.kind == "counter"}
    for family in text_string_to_metric_families(text):
        series = by_name.get(family.name)
        if series is None:
            continue
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue
            if any(sample.labels.get(k, "") != v for k, v in wanted.items()):
                continue
            if set(sample.labels) - set(wanted) - set(series.labels) - {"instance"}:
                continue
            key = (series.name, tuple(sample.labels.get(label, "") for label in series.labels))
            held[key] = sample.value
    return held


def _families(samples: Iterable[Sample], held: Mapping[tuple[str, tuple[str, ...]], float]) -> list[Metric]:
    values: dict[tuple[str, tuple[str, ...]], float] = dict(held)
    series_of = {s.name: s for s in cat.PUSHED}
    for sample in samples:
        key = (sample.series.name, sample.labels)
        if sample.series.kind == "counter":
            values[key] = values.get(key, 0.0) + sample.value
        else:
            values[key] = sample.value
    families: dict[str, Any] = {}
    for (name, labels), value in sorted(values.items()):
        series = series_of[name]
        if name not in families:
            kind = CounterMetricFamily if series.kind == "counter" else GaugeMetricFamily
            families[name] = kind(name, series.help, labels=series.labels)
        families[name].add_metric(list(labels), value)
    return list(families.values())


class _Static:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def push(
    samples: Sequence[Sample],
    *,
    gateway: str,
    dag_id: str,
    task_id: str | None = None,
    timeout: float = 5.0,
) -> None:
    """Replace the group ``{job, dag_id, task_id}`` with counters carried over plus ``samples``."""
    grouping = _grouping(dag_id, task_id)
    held = _held_counters(gateway, grouping, timeout)
    registry = CollectorRegistry()
    registry.register(_Static(_families(samples, held)))  # type: ignore[arg-type]
    push_to_gateway(gateway, job=JOB, registry=registry, grouping_key=grouping, timeout=timeout)


def record(
    samples: Sequence[Sample], *, dag_id: str, task_id: str | None = None, gateway: str | None = None
) -> None:
    """Send ``samples`` to Airflow's Stats and, when one is configured, the Pushgateway."""
    try:
        emit_stats(samples, dag_id=dag_id, task_id=task_id)
    except Exception:
        log.warning("Could not send task metrics of %s.%s to Airflow's Stats", dag_id, task_id, exc_info=True)
    gateway = gateway or pushgateway_url()
    if not gateway:
        return
    try:
        push(samples, gateway=gateway, dag_id=dag_id, task_id=task_id)
    except Exception as err:
        log.warning("Could not push task metrics of %s.%s to %s: %s", dag_id, task_id, gateway, err)


def now() -> float:
    return time.time()
