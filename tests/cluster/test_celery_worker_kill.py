"""A Celery worker killed while it runs a task: the task is retried on the other worker, once.

The run is a fresh day of the main DAG in cluster mode. While ``etl`` runs on a Celery worker
(its spark-submit driver under that worker), the worker's whole process group is killed, as a
lost machine would be. The scheduler notices the missing heartbeat, the try fails and the retry
runs on the surviving worker; the killed worker is started again afterwards. The run must end in
success with every side effect done once: the day's partitions hold each message once, training
submitted one Ray job, and the capacity gate took one lease.
Stands alone (a run of its own on a day of its own); needs ``make cluster-up`` with Celery.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import psutil
import pytest
from nuro_ml.hooks.ray import RayHook
from nuro_ml.local_cluster import celery, state
from nuro_ml.local_cluster.airflow import AIRFLOW

from tests.cluster import checks, faults
from tests.cluster.conftest import DAG_ID, Cluster
from tests.polling import wait_for

pytestmark = pytest.mark.cluster

RUNNING = frozenset({"running"})


def _worker_running(cluster: Cluster, task_pid: int) -> str | None:
    """The Celery worker whose process tree holds ``task_pid``."""
    for name in celery.WORKERS:
        pid = int(cluster.state["airflow"]["pids"][f"celery-{name}"])
        try:
            tree = {pid} | {child.pid for child in psutil.Process(pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            continue
        if task_pid in tree:
            return name
    return None


@pytest.fixture(scope="module")
def killed_run(cluster: Cluster) -> Iterator[tuple[str, str, str, str | None]]:
    if cluster.state.get("executor", "local") != "celery":
        pytest.skip("the cluster runs the LocalExecutor (make cluster-up EXECUTOR=celery)")
    cluster.api.wait_for_dag(DAG_ID)
    day = cluster.fresh_day()
    run_id = cluster.api.trigger(DAG_ID, cluster.conf(date_from=day, date_to=day))
    ti = cluster.api.wait_for_task(DAG_ID, run_id, "etl", RUNNING, timeout=900)
    # The ETL is under way once the Spark application runs tasks: then the worker goes.
    wait_for(
        lambda: any(e.tasks_in_flight() > 0 for e in faults.executors(cluster)),
        "the ETL's Spark application to run a task",
        timeout=900,
        interval=0.2,
    )
    ti = cluster.api.task_instances(DAG_ID, run_id)["etl"]
    assert ti["state"] == "running", f"etl ended before the worker could be killed: {ti['state']}"
    victim = _worker_running(cluster, int(ti["pid"]))
    assert victim is not None, f"no Celery worker runs the etl task process {ti['pid']}"
    started = time.monotonic()
    pid = int(cluster.state["airflow"]["pids"][f"celery-{victim}"])
    proc = psutil.Process(pid)
    # Celery retitles its processes, so the worker is started again from its name, not its cmdline.
    environ = proc.environ()
    os.killpg(pid, signal.SIGKILL)
    proc.wait(timeout=30)
    # The scheduler fails the lost try once its heartbeat is overdue; the retry runs on a live worker.
    deadline = time.monotonic() + 900
    retry_worker: str | None = None
    while time.monotonic() < deadline:
        retried = cluster.api.task_instances(DAG_ID, run_id)["etl"]
        if int(retried.get("try_number") or 1) >= 2 and retried["state"] == "running" and retried.get("pid"):
            retry_worker = _worker_running(cluster, int(retried["pid"]))
            if retry_worker:
                break
        if retried["state"] in ("success", "failed"):
            break
        time.sleep(1)
    cluster.figures.recoveries["celery_worker_killed"] = (
        f"etl try {retried['try_number']} on {retry_worker} after {time.monotonic() - started:.0f} s"
    )
    new_pid = celery.start_worker(victim, AIRFLOW, environ, cluster.root / "logs")
    cluster.state["airflow"]["pids"][f"celery-{victim}"] = new_pid
    state.save(cluster.state, cluster.root)
    celery.wait_ready({victim: new_pid}, cluster.root / "logs")
    cluster.run_to_end(run_id, "celery_worker_kill")
    cluster.figures.faults_injected.append("celery_worker_killed")
    yield run_id, day, victim, retry_worker


def test_the_run_succeeded_with_etl_retried_on_the_other_worker(
    cluster: Cluster, killed_run: tuple[str, str, str, str | None]
) -> None:
    run_id, _, victim, retry_worker = killed_run
    tis = cluster.api.task_instances(DAG_ID, run_id)
    assert cluster.api.run(DAG_ID, run_id)["state"] == "success", {t: ti["state"] for t, ti in tis.items()}
    assert int(tis["etl"]["try_number"]) == 2
    assert retry_worker is not None and retry_worker != victim
    assert checks.task_log(cluster, run_id, "etl", 2).read_text(errors="replace"), "no log of the retried etl"


def test_side_effects_happened_once(cluster: Cluster, killed_run: tuple[str, str, str, str | None]) -> None:
    run_id, day, _, _ = killed_run
    checks.check_etl_rows(cluster, day)
    checks.check_leases(cluster, run_id)
    hook = RayHook(None, address=cluster.state["ray"]["dashboard_url"])
    train = f"{DAG_ID}/{run_id}/train/"
    jobs = [j for j in hook.list_jobs() if j.metadata.get("nuro_ml_task_instance", "").startswith(train)]
    assert len(jobs) == 1, [j.submission_id for j in jobs]
