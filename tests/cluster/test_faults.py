"""Faults injected into one cluster-mode run of the main DAG, then what a user would check.

One run meets every fault in the order its tasks run, each injected once the run is in the state
its test is about (read from the system, never after a fixed delay):

* a Spark executor is killed while it has a task in flight (its log says so, and it is held
  still while that is checked);
* Redis is stopped while features are materialized (and started again once the task failed);
* the triggerer is restarted while the capacity sensor's trigger is waiting in it (GPUs held by
  another lease until the new triggerer has taken the wait over);
* the Ray worker node is killed while Ray Train workers of the job train on it, before training
  ends (the job's workers are held still meanwhile); a replacement node has joined first.

Each test then checks one recovery path. The file stands alone: it triggers its own run on a day
of its own, and the run registers the pool and quota it needs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil
import pytest
from nuro_ml.capacity.ledger import QuotaLedger
from nuro_ml.capacity.records import LeaseRequest, LeaseState, QueuedRequest, RequestState
from nuro_ml.local_cluster import ray_nodes, redis, state
from nuro_ml.local_cluster.processes import spawn, stop_group
from ray.job_submission import JobStatus
from ray.util.state.exception import RayStateApiException

from tests.cluster import checks, faults
from tests.cluster.conftest import DAG_ID, Cluster
from tests.polling import wait_for

pytestmark = pytest.mark.cluster

#: The faulted run trains on every GPU of the cluster: Ray Train packs two workers on the head
#: and two on the worker node, so the worker node's loss hits the job.
FAULT_GPUS = 4
#: Enough scenes that each of the four workers gets rows of both splits.
FAULT_DRIVE_SECONDS = 240
#: Boosting rounds of the faulted run: training lasts long past the moment it is seen running.
FAULT_BOOST_ROUNDS = 400
RUNNING = frozenset({"running"})
BLOCKER_KEY = "cluster-test/gpu-blocker"
RESULT_MARKER = "NURO_ML_RESULT"


@dataclass
class FaultLog:
    injected: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def _restart_triggerer(cluster: Cluster) -> datetime:
    """Stop the triggerer's process group; start it again with its own command line and environment.
    Returns when the old one was gone."""
    pid = int(cluster.state["airflow"]["pids"]["triggerer"])
    proc = psutil.Process(pid)
    cmdline, environ = proc.cmdline(), proc.environ()
    stop_group(pid)
    stopped_at = datetime.now(UTC)
    logs = cluster.root / "logs"
    new = spawn(cmdline, env=environ, log=logs / "triggerer.log")
    cluster.state["airflow"]["pids"]["triggerer"] = new.pid
    state.save(cluster.state, cluster.root)
    return stopped_at


def _kill_executor(cluster: Cluster, run_id: str, log: FaultLog) -> None:
    """SIGKILL an executor while one of its tasks runs: checked with the executor held still."""

    def kill_one_busy() -> bool:
        state_of_etl = cluster.api.task_instances(DAG_ID, run_id)["etl"]["state"]
        if state_of_etl not in (None, "scheduled", "queued", "running"):
            raise AssertionError(f"etl ended ({state_of_etl}) before an executor ran a task")
        for executor in faults.executors(cluster):
            with faults.frozen([executor.pid]) as held:
                if held and executor.tasks_in_flight() > 0:
                    os.kill(executor.pid, signal.SIGKILL)
                    log.injected["spark_executor_killed"] = str(executor.pid)
                    return True
        return False

    wait_for(kill_one_busy, "a Spark executor with a task in flight", timeout=900, interval=0.2)


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


def _waiting_request(ledger: QuotaLedger) -> QueuedRequest | None:
    """The run's capacity request, once an admission round in the triggerer has left it waiting."""
    waiting = [r for r in ledger.requests(state=RequestState.WAITING) if r.key != BLOCKER_KEY]
    return waiting[0] if len(waiting) == 1 and waiting[0].wait_reason is not None else None


def _hold_gpus_and_restart_triggerer(cluster: Cluster, run_id: str, log: FaultLog) -> None:
    ledger = QuotaLedger(cluster.ledger_url)
    cluster.api.wait_for_task(DAG_ID, run_id, "register_capacity", frozenset({"success"}), timeout=900)
    blocker = ledger.acquire(LeaseRequest(key=BLOCKER_KEY, team="perception", pool="local", gpus=2))
    try:
        cluster.api.wait_for_task(DAG_ID, run_id, "wait_for_gpus", frozenset({"deferred"}), timeout=1200)
        # The trigger runs in the triggerer and has found the GPUs taken: the state a restart must keep.
        wait_for(
            lambda: _waiting_request(ledger), "the deferred request to wait in the triggerer", timeout=300
        )
        restarted_at = _restart_triggerer(cluster)
        log.injected["triggerer_restarted"] = str(cluster.state["airflow"]["pids"]["triggerer"])
        # The new triggerer has taken the wait over once it polls the request again.
        wait_for(
            lambda: (r := _waiting_request(ledger)) is not None and r.last_seen_at > restarted_at,
            "the new triggerer to poll the request",
            timeout=600,
            interval=0.5,
        )
    finally:
        ledger.release(blocker.lease_id)


def _kill_ray_worker(cluster: Cluster, run_id: str, log: FaultLog) -> None:
    """Kill the worker node while the job's Ray Train workers train on it, before training ends.

    Once the job's log shows its worker group started and its workers are alive on both nodes,
    every worker is held still (SIGSTOP), so training cannot finish meanwhile; a replacement node
    joins, so the restarted worker group finds its GPUs at once; the node with workers is killed,
    and the workers on the head go on (SIGCONT) to find their peers gone.
    """
    ti = cluster.api.wait_for_task(DAG_ID, run_id, "train", frozenset({"running", "deferred"}), timeout=1500)
    if int(ti["try_number"]) != 1:
        raise AssertionError(f"train is on try {ti['try_number']} before the fault")
    sid = wait_for(
        lambda: _xcom_or_none(cluster, run_id, "train", "ray_submission_id"), "the train task's Ray job id"
    )
    ray = ray_nodes.RayCluster.from_dict(cluster.state["ray"])

    def training_on_a_worker_node() -> tuple[list[faults.TrainWorker], ray_nodes.RayNode] | None:
        if "Started training worker group" not in _job_log(ray, sid):
            return None
        try:
            workers = faults.train_workers(ray.dashboard_url, sid)
        except RayStateApiException:  # the state API times out on a loaded machine: read again
            return None
        hosts = [faults.node_of(ray, w.pid) for w in workers]
        on_worker_nodes = [n for n in hosts if n is not None and any(n is w for w in ray.workers)]
        if len(workers) != FAULT_GPUS or not on_worker_nodes:
            return None
        return workers, on_worker_nodes[0]

    workers, victim = wait_for(
        training_on_a_worker_node, "the job's workers training on the worker node", timeout=900, interval=0.5
    )
    with faults.frozen(w.pid for w in workers) as held:
        details = faults.job_details(ray.dashboard_url, sid)
        if (
            len(held) != len(workers)
            or details.status != JobStatus.RUNNING
            or RESULT_MARKER in _job_log(ray, sid)
        ):
            raise AssertionError(
                f"training ended before the worker node could be killed: job {details.status}"
            )
        driver = faults.node_of(ray, int(details.driver_info.pid)) if details.driver_info else None
        if driver is victim:
            raise AssertionError(
                f"the job's driver runs on the worker node {victim.pid}: that is another fault"
            )
        env = {"NURO_ML_CLUSTER_ID": cluster.state["cluster_id"], **cluster.state["env"]}
        ray_nodes.add_worker(ray, cpus=2, gpus=2, env=env)
        ray_nodes.stop_node(victim, grace=0)
        log.injected["ray_worker_killed"] = str(victim.pid)
        ray.workers.remove(victim)
        cluster.state["ray"] = ray.to_dict()
        state.save(cluster.state, cluster.root)


def _xcom_or_none(cluster: Cluster, run_id: str, task_id: str, key: str) -> object:
    with contextlib.suppress(Exception):
        return cluster.api.xcom(DAG_ID, run_id, task_id, key)
    return None


def _job_log(ray: ray_nodes.RayCluster, sid: str) -> str:
    """The job's log so far ("" while the dashboard does not answer)."""
    try:
        return str(httpx.get(f"{ray.dashboard_url}/api/jobs/{sid}/logs", timeout=30).json()["logs"])
    except httpx.HTTPError:
        return ""


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
    cluster.api.wait_for_dag(DAG_ID)
    log = FaultLog()
    day = cluster.fresh_day()
    conf = cluster.conf(
        date_from=day,
        date_to=day,
        gpus=FAULT_GPUS,
        drive_seconds=FAULT_DRIVE_SECONDS,
        num_boost_round=FAULT_BOOST_ROUNDS,
    )
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
    checks.check_etl_rows(cluster, faulted_run[2].injected["day"], drive_seconds=FAULT_DRIVE_SECONDS)


def test_deferred_sensor_resumed_with_one_lease(
    cluster: Cluster, faulted_run: tuple[str, dict[str, object], FaultLog]
) -> None:
    run_id, _, _ = faulted_run
    ti = cluster.api.task_instances(DAG_ID, run_id)["wait_for_gpus"]
    assert ti["state"] == "success" and int(ti["try_number"]) == 1
    checks.check_leases(cluster, run_id, gpus=FAULT_GPUS)


def test_training_restarted_its_worker_group_within_the_job(
    cluster: Cluster, faulted_run: tuple[str, dict[str, object], FaultLog]
) -> None:
    """The worker node died while the workers trained: Ray Train restarts the worker group on the
    replacement node within the same job (``FailureConfig(max_failures=1)``), from its latest
    checkpoint if it had one, and the task's first try succeeds."""
    run_id, _, _ = faulted_run
    assert int(cluster.api.task_instances(DAG_ID, run_id)["train"]["try_number"]) == 1
    summary = cluster.api.xcom(DAG_ID, run_id, "summarize")
    assert summary["training"]["status"] == "SUCCEEDED"
    assert Path(summary["training"]["artifact_uri"].removeprefix("file://")).is_file()
    ray = ray_nodes.RayCluster.from_dict(cluster.state["ray"])
    assert ray_nodes.alive_nodes(ray) == 2
    job_log = _job_log(ray, summary["training"]["submission_id"])
    died = job_log.find("node has died")
    assert died >= 0, job_log[-3000:]
    assert "Started training worker group" in job_log[died:], job_log[-3000:]
    cluster.figures.recoveries["ray_worker_killed"] = "worker group restarted within the job"


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
