"""Faults injected into one cluster-mode run of the main DAG, then what a user would check.

One run meets every fault in the order its tasks run: a Spark executor is killed mid-ETL,
Redis is stopped while features are materialized (and started again once the task failed),
the triggerer is restarted while the capacity sensor is deferred (GPUs held by another lease
until the new triggerer runs), and the Ray worker node is killed during training (a new worker
node joins). The run must end, in success, with the right rows, one lease, nothing leaked, and
every recovery path taken is written to the figures.
Runs after the main-DAG tests (file order) so it finds the pool and quota registered.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest
from nuro_ml.capacity.ledger import QuotaLedger
from nuro_ml.capacity.records import LeaseRequest, LeaseState
from nuro_ml.exceptions import CapacityError
from nuro_ml.local_cluster import ray_nodes, redis, spark, state
from nuro_ml.local_cluster.processes import spawn, stop_group

from tests.cluster import checks
from tests.cluster.conftest import DAG_ID, Cluster

pytestmark = pytest.mark.cluster

#: Boosting rounds of the faulted run: enough that the worker node dies while training runs.
FAULT_BOOST_ROUNDS = 60
RUNNING = frozenset({"running"})
BLOCKER_KEY = "cluster-test/gpu-blocker"


@dataclass
class FaultLog:
    injected: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def _restart_triggerer(cluster: Cluster) -> None:
    """Stop the triggerer's process group; start it again with its own command line and environment."""
    pid = int(cluster.state["airflow"]["pids"]["triggerer"])
    proc = psutil.Process(pid)
    cmdline, environ = proc.cmdline(), proc.environ()
    stop_group(pid)
    logs = cluster.root / "logs"
    new = spawn(cmdline, env=environ, log=logs / "triggerer.log")
    cluster.state["airflow"]["pids"]["triggerer"] = new.pid
    state.save(cluster.state, cluster.root)


def _kill_executor(cluster: Cluster, run_id: str, log: FaultLog) -> None:
    sp = cluster.state["spark"]
    standalone = spark.StandaloneCluster(
        sp["master_url"], "127.0.0.1", 0, sp["web_url"], sp["master_pid"], sp["worker_pid"], cluster.root
    )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        pids = spark.executor_pids(standalone)
        if pids:
            # Give the executor a moment to take tasks, so the kill lands mid-stage.
            time.sleep(3)
            for pid in spark.executor_pids(standalone)[:1]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    log.injected["spark_executor_killed"] = str(pid)
            return
        if cluster.api.task_instances(DAG_ID, run_id)["etl"]["state"] not in (
            None,
            "scheduled",
            "queued",
            "running",
        ):
            log.errors.append("etl finished before an executor could be killed")
            return
        time.sleep(0.5)


def _stop_redis_during_materialize(cluster: Cluster, run_id: str, log: FaultLog) -> None:
    cluster.api.wait_for_task(DAG_ID, run_id, "feast_materialize", RUNNING, timeout=900)
    rd = cluster.state["redis"]
    stop_group(int(rd["pid"]))
    log.injected["redis_stopped"] = str(rd["pid"])
    ti = cluster.api.wait_for_task(
        DAG_ID, run_id, "feast_materialize", frozenset({"up_for_retry", "failed", "success"}), timeout=600
    )
    if ti["state"] == "success":
        log.errors.append("feast_materialize succeeded while Redis was down")
    base = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    base["NURO_ML_CLUSTER_ID"] = cluster.state["cluster_id"]
    restarted = redis.start(
        cluster.root / "redis", int(rd["port"]), env=base, password=rd["password"], append_only=True
    )
    rd["pid"] = restarted.pid
    state.save(cluster.state, cluster.root)


def _hold_gpus_and_restart_triggerer(cluster: Cluster, run_id: str, log: FaultLog) -> None:
    ledger = QuotaLedger(cluster.ledger_url)
    cluster.api.wait_for_task(DAG_ID, run_id, "register_capacity", frozenset({"success"}), timeout=900)
    blocker = ledger.acquire(LeaseRequest(key=BLOCKER_KEY, team="perception", pool="local", gpus=2))
    try:
        cluster.api.wait_for_task(DAG_ID, run_id, "wait_for_gpus", frozenset({"deferred"}), timeout=1200)
        time.sleep(5)
        _restart_triggerer(cluster)
        log.injected["triggerer_restarted"] = str(cluster.state["airflow"]["pids"]["triggerer"])
        time.sleep(10)
    finally:
        ledger.release(blocker.lease_id)


def _kill_ray_worker(cluster: Cluster, run_id: str, log: FaultLog) -> None:
    cluster.api.wait_for_task(DAG_ID, run_id, "train", RUNNING, timeout=1500)
    ray = ray_nodes.RayCluster.from_dict(cluster.state["ray"])
    deadline = time.monotonic() + 300
    # Wait until the job's workers hold the worker node's GPUs: training is under way.
    from nuro_ml.capacity.backends.ray import RayBackend, RayBackendConfig

    backend = RayBackend(RayBackendConfig(address=ray.dashboard_url))
    while time.monotonic() < deadline:
        with contextlib.suppress(CapacityError):
            if backend.get_capacity()[0].free_gpus == 0:
                break
        time.sleep(1)
    worker = ray.workers[0]
    ray_nodes.stop_node(worker, grace=0)
    log.injected["ray_worker_killed"] = str(worker.pid)
    ray.workers.remove(worker)
    env = {"NURO_ML_CLUSTER_ID": cluster.state["cluster_id"], **cluster.state["env"]}
    ray_nodes.add_worker(ray, cpus=2, gpus=2, env=env)
    cluster.state["ray"] = ray.to_dict()
    state.save(cluster.state, cluster.root)


def _follow(steps: list[Callable[[], None]], log: FaultLog) -> threading.Thread:
    def run() -> None:
        for step in steps:
            try:
                step()
            except Exception as err:  # reported by the test, which fails on it
                log.errors.append(f"{getattr(step, '__name__', step)}: {err!r}")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def faulted_run(cluster: Cluster) -> Iterator[tuple[str, dict[str, object], FaultLog]]:
    log = FaultLog()
    day = cluster.fresh_day()
    conf = cluster.conf(date_from=day, date_to=day, num_boost_round=FAULT_BOOST_ROUNDS)
    run_id = cluster.api.trigger(DAG_ID, conf)
    thread = _follow(
        [
            lambda: _kill_executor(cluster, run_id, log),
            lambda: _stop_redis_during_materialize(cluster, run_id, log),
            lambda: _hold_gpus_and_restart_triggerer(cluster, run_id, log),
            lambda: _kill_ray_worker(cluster, run_id, log),
        ],
        log,
    )
    run = cluster.run_to_end(run_id, "faults")
    thread.join(timeout=600)
    cluster.figures.faults_injected = sorted(log.injected)
    log.injected["day"] = day
    yield run_id, run, log


def test_every_fault_was_injected_and_the_run_recovered(
    cluster: Cluster, faulted_run: tuple[str, dict[str, object], FaultLog]
) -> None:
    run_id, run, log = faulted_run
    assert log.errors == []
    assert set(log.injected) - {"day"} == {
        "spark_executor_killed",
        "redis_stopped",
        "triggerer_restarted",
        "ray_worker_killed",
    }
    states = {t: ti["state"] for t, ti in cluster.api.task_instances(DAG_ID, run_id).items()}
    assert run["state"] == "success", states


def test_materialize_retried_after_redis_came_back(
    cluster: Cluster, faulted_run: tuple[str, dict[str, object], FaultLog]
) -> None:
    run_id, _, _ = faulted_run
    ti = cluster.api.task_instances(DAG_ID, run_id)["feast_materialize"]
    assert ti["state"] == "success" and int(ti["try_number"]) == 2
    checks.check_online_features(cluster, faulted_run[2].injected["day"])


def test_etl_output_exact_after_executor_loss(
    cluster: Cluster, faulted_run: tuple[str, dict[str, object], FaultLog]
) -> None:
    checks.check_etl_rows(cluster, faulted_run[2].injected["day"])


def test_deferred_sensor_resumed_with_one_lease(
    cluster: Cluster, faulted_run: tuple[str, dict[str, object], FaultLog]
) -> None:
    run_id, _, _ = faulted_run
    ti = cluster.api.task_instances(DAG_ID, run_id)["wait_for_gpus"]
    assert ti["state"] == "success" and int(ti["try_number"]) == 1
    checks.check_leases(cluster, run_id)


def test_training_recovered_from_worker_loss(
    cluster: Cluster, faulted_run: tuple[str, dict[str, object], FaultLog]
) -> None:
    """Ray documents two ways to come back from a lost node, and either is a pass, a hang never is:
    the node dies while Ray Train places its worker group, and Train starts the group again on
    the replacement node within the same job; or it dies while the workers train, the job fails
    with a clear error, and Airflow's retry submits a new job that trains on the new node."""
    run_id, _, _ = faulted_run
    summary = cluster.api.xcom(DAG_ID, run_id, "summarize")
    assert summary["training"]["status"] == "SUCCEEDED"
    assert Path(summary["training"]["artifact_uri"].removeprefix("file://")).is_file()
    ray = ray_nodes.RayCluster.from_dict(cluster.state["ray"])
    assert ray_nodes.alive_nodes(ray) == 2
    job_log = httpx.get(
        f"{ray.dashboard_url}/api/jobs/{summary['training']['submission_id']}/logs", timeout=30
    ).json()["logs"]
    tries = int(cluster.api.task_instances(DAG_ID, run_id)["train"]["try_number"])
    if tries == 1:
        died = job_log.find("node has died")
        assert died >= 0, job_log[-3000:]
        assert "Started training worker group" in job_log[died:], job_log[-3000:]
        cluster.figures.recoveries["ray_worker_killed"] = "worker group restarted within the job"
    else:
        assert tries == 2
        first = checks.task_log(cluster, run_id, "train", 1).read_text()
        assert "FAILED" in first, first[-3000:]
        cluster.figures.recoveries["ray_worker_killed"] = "job failed clearly, task retry trained"


def test_final_ledger_audit_no_leaked_lease(
    cluster: Cluster, faulted_run: tuple[str, dict[str, object], FaultLog]
) -> None:
    ledger = QuotaLedger(cluster.ledger_url)
    leases = ledger.leases()
    assert ledger.leases(state=LeaseState.ACTIVE) == []
    assert {lease.state for lease in leases} == {LeaseState.RELEASED}
    # One lease per run whose capacity gate admitted it, besides the blockers this test took.
    runs = cluster.api.get_json(f"/api/v2/dags/{DAG_ID}/dagRuns")["dag_runs"]
    admitted = [
        r
        for r in runs
        if cluster.api.task_instances(DAG_ID, r["dag_run_id"])["wait_for_gpus"]["state"] == "success"
    ]
    assert len([lease for lease in leases if lease.key != BLOCKER_KEY]) == len(admitted)
    cluster.figures.leases_audited = len(leases)
    checks.check_no_secret_leaked(cluster, faulted_run[0])
