"""Executor settings of the loopback cluster: Celery as the compose file runs it, or LocalExecutor."""

from __future__ import annotations

import pytest
from nuro_ml.local_cluster import celery, cluster


def test_celery_uses_redis_as_broker_and_postgres_as_result_backend() -> None:
    env = celery.executor_env(
        "celery",
        broker_url=celery.redis_broker_url(6390, "s3cret"),
        result_backend="postgresql+psycopg://nuro:pw@127.0.0.1:5544/airflow",
    )
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://:s3cret@127.0.0.1:6390/1"
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == "db+postgresql+psycopg://nuro:pw@127.0.0.1:5544/airflow"
    assert env["AIRFLOW__CELERY__TASK_ACKS_LATE"] == "True"
    assert int(env["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT"]) < 300


def test_local_executor_needs_no_broker() -> None:
    assert celery.executor_env("local", broker_url="", result_backend="") == {
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor"
    }


def test_an_unknown_executor_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="executor 'kubernetes': choose one of celery, local"):
        celery.executor_env("kubernetes", broker_url="", result_backend="")


def test_cluster_up_refuses_an_unknown_executor_before_starting_anything(tmp_path) -> None:
    with pytest.raises(ValueError, match="executor 'dask'"):
        cluster.up(tmp_path / "cluster", executor="dask")
    assert not (tmp_path / "cluster").exists()


def test_two_workers_get_distinct_celery_hostnames(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[list[str]] = []

    class Proc:
        pid = 4242

    monkeypatch.setattr(celery, "spawn", lambda args, **kw: started.append(list(args)) or Proc())
    for name in celery.WORKERS:
        celery.start_worker(name, "airflow", {}, tmp_path)
    hostnames = [args[args.index("--celery-hostname") + 1] for args in started]
    assert hostnames == ["worker-1@%h", "worker-2@%h"]
    assert all(args[1:3] == ["celery", "worker"] and "--skip-serve-logs" in args for args in started)
