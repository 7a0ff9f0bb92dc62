"""The CeleryExecutor on loopback, as the compose file runs it: Redis broker, PostgreSQL results, two workers.

Both workers run on this machine, so each gets its own Celery hostname (``worker-1@<host>``...)
and neither serves logs: the API server reads task logs from the shared log folder.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

from nuro_ml.local_cluster.processes import alive, spawn, tail

EXECUTORS = ("celery", "local")
WORKERS = ("worker-1", "worker-2")
#: Task slots per worker; two workers of two fill a 2-core machine as LocalExecutor's 4 did.
CONCURRENCY = 2
#: How soon the scheduler gives up on a task whose worker stopped heartbeating (default 300 s):
#: the task is then failed and retried on a live worker.
HEARTBEAT_TIMEOUT_SECONDS = 60


class CeleryClusterError(RuntimeError):
    """A Celery worker did not start."""


def executor_env(executor: str, *, broker_url: str, result_backend: str) -> dict[str, str]:
    """The ``AIRFLOW__*`` settings of the chosen executor (``celery`` or ``local``)."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor {executor!r}: choose one of {', '.join(EXECUTORS)}")
    if executor == "local":
        return {"AIRFLOW__CORE__EXECUTOR": "LocalExecutor"}
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": broker_url,
        # Celery's database backend: the SQLAlchemy URL behind a ``db+`` prefix.
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + result_backend,
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(CONCURRENCY),
        # Acknowledged only when done: a message whose worker died is not lost.
        "AIRFLOW__CELERY__TASK_ACKS_LATE": "True",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT_SECONDS),
    }


def redis_broker_url(port: int, password: str, db: int = 1) -> str:
    """Redis database ``db`` as the broker (the online store keeps database 0)."""
    return f"redis://:{password}@127.0.0.1:{port}/{db}"


def start_worker(name: str, airflow: str, env: Mapping[str, str], logs: Path) -> int:
    """Start ``airflow celery worker`` as ``name`` in its own process group; returns its PID."""
    args = [
        airflow,
        "celery",
        "worker",
        "--celery-hostname",
        f"{name}@%h",
        "--concurrency",
        str(CONCURRENCY),
        "--skip-serve-logs",
    ]
    return spawn(args, env=env, log=logs / f"celery-{name}.log").pid


def wait_ready(pids: Mapping[str, int], logs: Path, timeout: float = 180.0) -> None:
    """Wait until every worker has logged Celery's ``ready.`` line; fail at once if one exits."""
    deadline = time.monotonic() + timeout
    pending = dict(pids)
    while pending:
        for name, pid in list(pending.items()):
            log = logs / f"celery-{name}.log"
            if log.exists() and f"{name}@" in log.read_text(errors="replace") and " ready." in tail(log, 200):
                del pending[name]
            elif not alive(pid):
                raise CeleryClusterError(f"Celery worker {name} exited; its log ends with:\n{tail(log)}")
        if pending and time.monotonic() > deadline:
            raise CeleryClusterError(f"Celery workers {sorted(pending)} not ready within {timeout:.0f} s")
        if pending:
            time.sleep(1.0)
