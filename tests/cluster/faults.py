"""Reading where the cluster is, so a fault test injects its fault in the state it is about.

A fault injected after a fixed delay lands wherever the run happens to be on that machine that
day. These probes read the state itself (a Spark executor with a task in flight, Ray Train workers
of a job on a given node), and :func:`frozen` holds processes still while a test checks that state
and injects the fault, so the state cannot move on between the check and the fault.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from nuro_ml.local_cluster import ray_nodes, spark

from tests.cluster.conftest import Cluster


@contextlib.contextmanager
def frozen(pids: Iterable[int]) -> Iterator[list[int]]:
    """Stop (SIGSTOP) the processes for the block, and let the survivors go on (SIGCONT) after it."""
    stopped: list[int] = []
    try:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
        yield stopped
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


# -- Spark ----------------------------------------------------------------------------------------


def standalone(cluster: Cluster) -> spark.StandaloneCluster:
    sp = cluster.state["spark"]
    return spark.StandaloneCluster(
        sp["master_url"],
        "127.0.0.1",
        0,
        sp["web_url"],
        sp["master_pid"],
        sp["worker_pid"],
        Path(sp["work_dir"]),
    )


@dataclass(frozen=True)
class Executor:
    pid: int
    #: The executor's stderr in the worker's work directory: Spark's Executor logs each task there.
    log: Path

    def tasks_in_flight(self) -> int:
        """Tasks the executor has started and not yet finished, failed or killed, by its log."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return 0
        # Plain or structured (JSON) log lines alike: only the Executor logs these in this file.
        started = len(re.findall(r"Running task ", text))
        ended = len(re.findall(r"Finished task |Exception in task |[Kk]illed task ", text))
        return started - ended


def executors(cluster: Cluster) -> list[Executor]:
    """The executor JVMs the standalone worker runs now, each with its log."""
    sa = standalone(cluster)
    found = []
    for pid in spark.executor_pids(sa):
        try:
            argv = psutil.Process(pid).cmdline()
        except psutil.NoSuchProcess:
            continue
        app, executor = _arg(argv, "--app-id"), _arg(argv, "--executor-id")
        if app and executor:
            found.append(Executor(pid, sa.work_dir / "work" / app / executor / "stderr"))
    return found


def _arg(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv[:-1] else None


# -- Ray ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainWorker:
    pid: int
    node_id: str


def job_details(dashboard_url: str, submission_id: str) -> Any:
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(dashboard_url).get_job_info(submission_id)


def train_workers(dashboard_url: str, submission_id: str) -> list[TrainWorker]:
    """The job's live Ray Train worker actors."""
    from ray.util.state import list_actors

    job_id = job_details(dashboard_url, submission_id).job_id
    if job_id is None:  # the driver has not started yet
        return []
    actors = list_actors(
        address=dashboard_url, filters=[("state", "=", "ALIVE"), ("job_id", "=", job_id)], limit=1000
    )
    return [TrainWorker(a.pid, a.node_id) for a in actors if "TrainWorker" in (a.class_name or "")]


def node_of(ray: ray_nodes.RayCluster, pid: int) -> ray_nodes.RayNode | None:
    """The node whose processes include ``pid``."""
    for node in ray.nodes:
        node.remember_children()
        if pid in node.known_pids:
            return node
    return None
