"""A Spark standalone master and worker from pyspark's own install, on 127.0.0.1."""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from nuro_ml.local_cluster.processes import alive, free_port, spawn, stop_group, tail


@dataclass(frozen=True)
class StandaloneCluster:
    master_url: str
    host: str
    port: int
    web_url: str
    master_pid: int
    worker_pid: int
    work_dir: Path


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


def _env(base: Mapping[str, str], work: Path) -> dict[str, str]:
    return {
        **base,
        "SPARK_HOME": str(spark_home()),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_LOG_DIR": str(work / "logs"),
        "SPARK_WORKER_DIR": str(work / "work"),
        "PYSPARK_PYTHON": sys.executable,
        "SPARK_NO_DAEMONIZE": "1",
    }


def workers_alive(web_url: str) -> int:
    """Workers the master's JSON status lists as ALIVE (0 when the master does not answer)."""
    try:
        with urllib.request.urlopen(f"{web_url}/json/", timeout=2) as resp:
            state = json.load(resp)
    except (OSError, ValueError):
        return 0
    return sum(1 for w in state.get("workers", []) if w.get("state") == "ALIVE")


def start(
    work: Path,
    *,
    env: Mapping[str, str],
    cores: int = 2,
    memory: str = "2g",
    timeout: float = 240.0,
) -> StandaloneCluster:
    """Start the master, then one worker with ``cores`` and ``memory``; wait until it is ALIVE."""
    work.mkdir(parents=True, exist_ok=True)
    spark_class = str(spark_home() / "bin" / "spark-class")
    daemon_env = _env(env, work)
    port, web, worker_web = free_port(), free_port(), free_port()
    master_args = ["--host", "127.0.0.1", "--port", str(port), "--webui-port", str(web)]
    master = spawn(
        [spark_class, "org.apache.spark.deploy.master.Master", *master_args],
        env=daemon_env,
        log=work / "master.log",
    )
    url = f"spark://127.0.0.1:{port}"
    worker_args = ["--host", "127.0.0.1", "--cores", str(cores), "--memory", memory]
    worker_args += ["--webui-port", str(worker_web), "--work-dir", str(work / "work")]
    worker = spawn(
        [spark_class, "org.apache.spark.deploy.worker.Worker", url, *worker_args],
        env=daemon_env,
        log=work / "worker.log",
    )
    web_url = f"http://127.0.0.1:{web}"
    cluster = StandaloneCluster(url, "127.0.0.1", port, web_url, master.pid, worker.pid, work)
    deadline = time.monotonic() + timeout
    while workers_alive(cluster.web_url) < 1:
        if not alive(master.pid) or not alive(worker.pid) or time.monotonic() > deadline:
            logs = tail(work / "master.log") + "\n" + tail(work / "worker.log")
            stop(cluster)
            raise RuntimeError(f"Spark standalone cluster did not come up; logs:\n{logs}")
        time.sleep(1.0)
    return cluster


def executor_pids(cluster: StandaloneCluster) -> list[int]:
    """PIDs of the executor JVMs the worker runs right now (its ``CoarseGrainedExecutorBackend`` children)."""
    import psutil

    try:
        children = psutil.Process(cluster.worker_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    pids = []
    for child in children:
        try:
            if any("CoarseGrainedExecutorBackend" in part for part in child.cmdline()):
                pids.append(child.pid)
        except psutil.NoSuchProcess:
            continue
    return pids


def stop(cluster: StandaloneCluster, *, grace: float = 20.0) -> None:
    stop_group(cluster.worker_pid, grace=grace)
    stop_group(cluster.master_pid, grace=grace)
