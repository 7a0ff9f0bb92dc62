"""Every series the platform exports, named by Prometheus conventions, with bounded labels.

Two paths, one per kind of state (as the Prometheus docs advise for batch systems):

* **Ledger state** (``SCRAPED``) is computed at scrape time from the quota ledger by
  :class:`nuro_ml.metrics.ledger.LedgerCollector`, served at ``/nuro-ml/metrics``; it is right
  whichever process changed the ledger.
* **What tasks did** (``PUSHED``) is pushed at the end of each task to a Pushgateway, grouped
  by DAG and task, and sent to Airflow's own ``Stats`` (StatsD or OpenTelemetry).

Label values must come from configuration (teams, pools, views, topics, launchers) or from
a closed set (reasons, statuses): never run ids, lease ids or request keys, which would make
every run a new series. :data:`ALLOWED_LABELS` is what the tests hold every output to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["gauge", "counter", "histogram"]

PREFIX = "nuro_ml"


@dataclass(frozen=True)
class Series:
    """One metric family: name (without ``_total``), type, help and label names."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    #: Name in Airflow's ``Stats`` (dots, StatsD style); pushed series only.
    stats_name: str = ""


#: Upper bounds (seconds) of the admission-wait histogram: 10 s to one day.
WAIT_BUCKETS: tuple[float, ...] = (10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)

# -- scraped from the ledger ---------------------------------------------------------------

PENDING_REQUESTS = Series(
    f"{PREFIX}_capacity_pending_requests",
    "gauge",
    "Requests waiting for GPUs, by why they wait (admissible: admitted at the waiter's next poll).",
    ("team", "pool", "reason"),
)
PENDING_GPUS = Series(
    f"{PREFIX}_capacity_pending_gpus", "gauge", "GPUs asked for by waiting requests.", ("team", "pool")
)
OLDEST_WAIT = Series(
    f"{PREFIX}_capacity_oldest_wait_seconds",
    "gauge",
    "How long the oldest waiting request has waited.",
    ("team", "pool"),
)
ADMISSION_WAIT = Series(
    f"{PREFIX}_capacity_admission_wait_seconds",
    "histogram",
    "Time from enqueue to admission of admitted requests.",
    ("team", "pool"),
)
LEASES_ACTIVE = Series(f"{PREFIX}_leases_active", "gauge", "Active, unexpired GPU leases.", ("team", "pool"))
LEASED_GPUS = Series(f"{PREFIX}_leased_gpus", "gauge", "GPUs held by active leases.", ("team", "pool"))
LEASES_PAST_EXPIRY = Series(
    f"{PREFIX}_leases_past_expiry",
    "gauge",
    "Leases still marked active after their expiry (holder stopped heartbeating, not yet reclaimed).",
    ("team", "pool"),
)
GPU_HOURS = Series(
    f"{PREFIX}_gpu_hours",
    "counter",
    "GPU-hours held by leases since the ledger began (active leases up to now).",
    ("team", "pool"),
)
GPU_COST = Series(
    f"{PREFIX}_gpu_cost_usd",
    "counter",
    "Cost of those GPU-hours at the pool's price per GPU-hour (pools with a known price).",
    ("team", "pool"),
)
QUOTA_NOMINAL = Series(
    f"{PREFIX}_quota_nominal_gpus", "gauge", "GPUs a team is entitled to in a pool.", ("team", "pool")
)
QUOTA_BORROWING = Series(
    f"{PREFIX}_quota_borrowing_limit_gpus",
    "gauge",
    "GPUs a team may borrow beyond its nominal quota (absent: no limit).",
    ("team", "pool"),
)
POOL_CAPACITY = Series(f"{PREFIX}_pool_capacity_gpus", "gauge", "GPUs in a pool.", ("pool", "gpu_type"))
LEDGER_UP = Series(f"{PREFIX}_ledger_up", "gauge", "1 when the scrape could read the quota ledger, else 0.")
SCRAPE_SECONDS = Series(
    f"{PREFIX}_ledger_scrape_duration_seconds", "gauge", "Time this scrape spent reading the ledger."
)

SCRAPED: tuple[Series, ...] = (
    PENDING_REQUESTS,
    PENDING_GPUS,
    OLDEST_WAIT,
    ADMISSION_WAIT,
    LEASES_ACTIVE,
    LEASED_GPUS,
    LEASES_PAST_EXPIRY,
    GPU_HOURS,
    GPU_COST,
    QUOTA_NOMINAL,
    QUOTA_BORROWING,
    POOL_CAPACITY,
    LEDGER_UP,
    SCRAPE_SECONDS,
)

# -- scraped from the telemetry stream's progress record ----------------------------------

STREAM_FRESHNESS = Series(
    f"{PREFIX}_stream_freshness_seconds",
    "gauge",
    "Seconds from a segment landing or a record arriving to its feature being readable online "
    "(p95 over the recent window, p95 and max of the last pushed batch).",
    ("statistic",),
)
STREAM_COMMIT_AGE = Series(
    f"{PREFIX}_stream_last_commit_age_seconds",
    "gauge",
    "Seconds since the stream query last committed a micro-batch.",
    ("query",),
)
STREAM_WATERMARK = Series(
    f"{PREFIX}_stream_watermark_timestamp_seconds",
    "gauge",
    "The stream query's committed event-time watermark (Unix time).",
    ("query",),
)
STREAM_UP = Series(f"{PREFIX}_stream_up", "gauge", "1 while the stream's driver process runs.")

STREAM_SCRAPED: tuple[Series, ...] = (STREAM_FRESHNESS, STREAM_COMMIT_AGE, STREAM_WATERMARK, STREAM_UP)

# -- pushed by tasks -----------------------------------------------------------------------

ETL_MESSAGES = Series(
    f"{PREFIX}_etl_messages", "counter", "Messages decoded by the ETL, by topic.", ("topic",), "etl.messages"
)
ETL_BYTES = Series(f"{PREFIX}_etl_bytes", "counter", "Bytes of drive logs read by the ETL.", (), "etl.bytes")
ETL_FILES = Series(f"{PREFIX}_etl_files", "counter", "Drive-log files read by the ETL.", (), "etl.files")
ETL_QUARANTINED = Series(
    f"{PREFIX}_etl_quarantined_files",
    "counter",
    "Drive-log files the ETL quarantined as corrupt.",
    (),
    "etl.quarantined_files",
)
MATERIALIZED_ROWS = Series(
    f"{PREFIX}_materialized_rows",
    "counter",
    "Rows written to the online store, by feature view.",
    ("view",),
    "feast.materialized_rows",
)
CACHE_HITS = Series(
    f"{PREFIX}_feature_cache_hits",
    "counter",
    "Materialization units served from the computation cache.",
    ("view",),
    "feast.cache_hits",
)
CACHE_MISSES = Series(
    f"{PREFIX}_feature_cache_misses",
    "counter",
    "Materialization units computed afresh.",
    ("view",),
    "feast.cache_misses",
)
TRAINING_SECONDS = Series(
    f"{PREFIX}_training_job_seconds",
    "gauge",
    "Duration of the task's last training job, by launcher and outcome.",
    ("launcher", "status"),
    "training.job_seconds",
)
TRAINING_JOBS = Series(
    f"{PREFIX}_training_jobs",
    "counter",
    "Training jobs finished, by launcher and outcome.",
    ("launcher", "status"),
    "training.jobs",
)
DRIFT = Series(
    f"{PREFIX}_terraform_drift_detected",
    "gauge",
    "1 when the last drift check found drift, else 0.",
    ("environment",),
    "terraform.drift_detected",
)
LAST_SUCCESS = Series(
    f"{PREFIX}_task_last_success_timestamp_seconds",
    "gauge",
    "Unix time of the task's last successful run.",
    (),
    "task.last_success",
)
LAST_FAILURE = Series(
    f"{PREFIX}_task_last_failure_timestamp_seconds",
    "gauge",
    "Unix time of the task's last failed run.",
    (),
    "task.last_failure",
)
DAG_LAST_SUCCESS = Series(
    f"{PREFIX}_dag_last_success_timestamp_seconds",
    "gauge",
    "Unix time the DAG last finished a run successfully (grouped by DAG only).",
    (),
    "dag.last_success",
)
TASK_SECONDS = Series(
    f"{PREFIX}_task_duration_seconds", "gauge", "Duration of the task's last run.", (), "task.duration"
)

PUSHED: tuple[Series, ...] = (
    ETL_MESSAGES,
    ETL_BYTES,
    ETL_FILES,
    ETL_QUARANTINED,
    MATERIALIZED_ROWS,
    CACHE_HITS,
    CACHE_MISSES,
    TRAINING_SECONDS,
    TRAINING_JOBS,
    DRIFT,
    LAST_SUCCESS,
    LAST_FAILURE,
    DAG_LAST_SUCCESS,
    TASK_SECONDS,
)

#: Grouping labels the Pushgateway adds to every pushed series (bounded: DAGs and tasks).
GROUPING_LABELS: tuple[str, ...] = ("job", "dag_id", "task_id")

#: Every label name any of our series may carry; anything else is a bug (unbounded ids).
ALLOWED_LABELS: frozenset[str] = frozenset(
    {label for series in SCRAPED + STREAM_SCRAPED + PUSHED for label in series.labels}
    | set(GROUPING_LABELS)
    | {"le", "instance"}
)
#: Label names that would make series unbounded; they must never appear.
FORBIDDEN_LABELS: frozenset[str] = frozenset(
    {"run_id", "lease_id", "request_key", "key", "submission_id", "try_number", "map_index", "logical_date"}
)
