"""Bring the whole local topology up or down, recording it in ``.cluster/state.json``."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from nuro_ml.local_cluster import airflow, celery, postgres, ray_nodes, redis, spark, state
from nuro_ml.local_cluster.processes import MARKER_ENV, alive, free_port, stop_group, stop_marked
from nuro_ml.settings import REPO_ROOT

log = logging.getLogger(__name__)

MAIN_DAG_ID = "av_training_pipeline"
DB_USER = "nuro"
#: Databases on the one PostgreSQL server, as docker/postgres/init-databases.sql creates them.
DATABASES = {"airflow": "airflow", "ledger": "nuro_ledger", "feast": "feast_registry"}
#: Ray nodes as in the compose file: no GPUs on the head, logical GPUs on the worker.
RAY_HEAD = {"cpus": 2, "gpus": 0}
RAY_WORKER = {"cpus": 2, "gpus": 2}
SPARK_WORKER = {"cores": 2, "memory": "2g"}


def _daemon_pids(st: dict[str, Any]) -> dict[str, int]:
    pids = {f"airflow-{name}": int(pid) for name, pid in st["airflow"]["pids"].items()}
    pids["redis"] = int(st["redis"]["pid"])
    pids["spark-master"] = int(st["spark"]["master_pid"])
    pids["spark-worker"] = int(st["spark"]["worker_pid"])
    cluster = ray_nodes.RayCluster.from_dict(st["ray"])
    pids.update({f"ray-node-{n.pid}": n.pid for n in cluster.nodes})
    pg = postgres.postmaster_pid(Path(st["postgres"]["data_dir"]))
    pids["postgres"] = pg or 0
    return pids


def status(root: Path | None = None) -> dict[str, Any]:
    """Which recorded daemons are alive, and whether Airflow reports itself healthy."""
    st = state.load(root)
    if st is None:
        return {"running": False, "daemons": {}}
    daemons = {name: alive(pid) for name, pid in _daemon_pids(st).items()}
    return {
        "running": all(daemons.values()) and airflow.healthy(st["airflow"]["url"]),
        "daemons": daemons,
        "airflow_url": st["airflow"]["url"],
    }


def _base_env(cluster_id: str, data: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("AIRFLOW__CORE__UNIT_TEST_MODE", None)
    env.update({MARKER_ENV: cluster_id, "NURO_ML_DATA_DIR": str(data), "RAY_USAGE_STATS_ENABLED": "0"})
    # Jobs run `python ...` (Ray entrypoints, Spark workers): this environment's interpreter first.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def up(root: Path | None = None, executor: str = "celery") -> dict[str, Any]:
    """Start everything (a running cluster is left as it is); returns the recorded state.

    ``executor``: ``celery`` (two Celery workers, Redis broker, PostgreSQL result backend, as in the
    compose file) or ``local`` (the scheduler runs tasks itself).
    """
    if executor not in celery.EXECUTORS:
        raise ValueError(f"executor {executor!r}: choose one of {', '.join(celery.EXECUTORS)}")
    root = root or state.cluster_dir()
    current = status(root)
    if current["running"]:
        log.info("Cluster already running at %s", current["airflow_url"])
        return state.load(root) or {}
    if state.load(root) is not None:
        log.warning("Cluster partly down %s; stopping the rest before starting anew", current["daemons"])
        down(root)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    root.chmod(0o755)
    cluster_id = uuid.uuid4().hex
    data = root / "data"
    data.mkdir()
    env = _base_env(cluster_id, data)
    timings: dict[str, float] = {}
    st: dict[str, Any] = {
        "cluster_id": cluster_id,
        "root": str(root),
        "timings": timings,
        "executor": executor,
    }
    started = time.monotonic()
    try:
        _up(root, env, st, timings)
    except BaseException:
        if st.get("postgres"):
            state.save(st, root)
        down(root)
        raise
    timings["total"] = round(time.monotonic() - started, 1)
    state.save(st, root)
    return st


def _step(timings: dict[str, float], name: str, started: float) -> None:
    timings[name] = round(time.monotonic() - started, 1)
    log.info("%s up in %.1f s", name, timings[name])


def _up(root: Path, env: dict[str, str], st: dict[str, Any], timings: dict[str, float]) -> None:
    t = time.monotonic()
    pg_dir = root / "postgres"
    postgres.init_cluster(pg_dir)
    pg_port = free_port()
    st["postgres"] = {"data_dir": str(pg_dir), "port": pg_port}
    postgres.start(pg_dir, pg_port)
    db_password = secrets.token_urlsafe(16)
    server = postgres.create_user(pg_port, DB_USER, db_password, DATABASES["airflow"])
    urls = {key: server.create_database(name) for key, name in DATABASES.items()}
    st["postgres"].update(user=DB_USER, password=db_password, urls=urls)
    _step(timings, "postgres", t)

    t = time.monotonic()
    redis_password = secrets.token_urlsafe(16)
    rds = redis.start(root / "redis", free_port(), env=env, password=redis_password, append_only=True)
    st["redis"] = {"pid": rds.pid, "port": rds.port, "password": redis_password, "dir": str(root / "redis")}
    _step(timings, "redis", t)

    # What platform code needs wherever it runs (tasks, Spark executors, Ray jobs), as in compose.
    nuro_env = {
        "NURO_ML_DATA_DIR": env["NURO_ML_DATA_DIR"],
        "NURO_ML_LEDGER_URL": urls["ledger"],
        "NURO_ML_FEAST_ONLINE_STORE": "redis",
        "NURO_ML_FEAST_REDIS_CONNECTION_STRING": rds.connection_string,
        "NURO_ML_FEAST_REGISTRY_URL": urls["feast"],
        "NURO_ML_FEAST_CACHE_URL": urls["feast"],
        "PATH": env["PATH"],
    }
    st["env"] = nuro_env

    t = time.monotonic()
    sp = spark.start(root / "spark", env={**env, **nuro_env}, **SPARK_WORKER)  # type: ignore[arg-type]
    st["spark"] = {
        "master_url": sp.master_url,
        "web_url": sp.web_url,
        "master_pid": sp.master_pid,
        "worker_pid": sp.worker_pid,
        "work_dir": str(sp.work_dir),
    }
    _step(timings, "spark", t)

    t = time.monotonic()
    ray = ray_nodes.start_ray_cluster(
        head_cpus=RAY_HEAD["cpus"],
        head_gpus=RAY_HEAD["gpus"],
        worker_cpus=RAY_WORKER["cpus"],
        worker_gpus=RAY_WORKER["gpus"],
        env={MARKER_ENV: env[MARKER_ENV], **nuro_env},
    )
    st["ray"] = ray.to_dict()
    _step(timings, "ray", t)

    t = time.monotonic()
    home = root / "airflow"
    home.mkdir()
    port = free_port()
    passwords = airflow.write_passwords(home / "passwords.json")
    connections = {
        "spark_default": {
            "conn_type": "spark",
            "host": "spark://127.0.0.1",
            "port": sp.port,
            "extra": {"deploy-mode": "client"},
        },
        "ray_default": {
            "conn_type": "ray",
            "host": "127.0.0.1",
            "port": int(ray.dashboard_url.rsplit(":", 1)[1]),
            "schema": "http",
        },
        "feast_default": {
            "conn_type": "feast",
            "host": "127.0.0.1",
            "port": rds.port,
            "password": redis_password,
            "extra": {"online_store": "redis", "registry_url": urls["feast"], "cache_url": urls["feast"]},
        },
    }
    af_env = airflow.build_env(
        env,
        home=home,
        dags=REPO_ROOT / "dags",
        plugins=REPO_ROOT / "plugins",
        db_url=urls["airflow"],
        port=port,
        passwords_file=home / "passwords.json",
        connections=connections,
        extra={
            "NURO_ML_LEDGER_URL": urls["ledger"],
            **celery.executor_env(
                st["executor"],
                broker_url=celery.redis_broker_url(rds.port, redis_password),
                # As in the compose file: Celery's results in the Airflow metadata database.
                result_backend=urls["airflow"],
            ),
        },
    )
    logs = root / "logs"
    logs.mkdir()
    airflow.migrate(af_env, logs / "db-migrate.log")
    from nuro_ml.capacity.ledger import QuotaLedger

    QuotaLedger(urls["ledger"]).migrate()
    pids: dict[str, int] = {}
    url = f"http://127.0.0.1:{port}"
    st["airflow"] = {
        "home": str(home),
        "port": port,
        "url": url,
        "pids": pids,
        "passwords": passwords,
        "logs": str(logs),
    }
    for name in airflow.DAEMONS:
        pids[name] = airflow.start_daemon(name, af_env, logs, port)
    workers: dict[str, int] = {}
    if st["executor"] == "celery":
        for worker in celery.WORKERS:
            workers[worker] = pids[f"celery-{worker}"] = celery.start_worker(
                worker, airflow.AIRFLOW, af_env, logs
            )
    state.save(st, root)
    airflow.wait_healthy(url, pids, logs)
    celery.wait_ready(workers, logs)
    airflow.ApiClient(url, passwords).wait_for_dag(MAIN_DAG_ID)
    _step(timings, "airflow", t)


def down(root: Path | None = None) -> list[str]:
    """Stop exactly what ``up`` recorded (by process group, then by marker); returns what was stopped."""
    root = root or state.cluster_dir()
    st = state.load(root)
    if st is None:
        return []
    stopped: list[str] = []
    daemons = (st.get("airflow") or {}).get("pids", {})
    # The daemons stop side by side: each may take its grace period to end its task workers.
    with ThreadPoolExecutor(max_workers=max(1, len(daemons))) as pool:
        list(pool.map(lambda pid: stop_group(int(pid)), daemons.values()))
    stopped += [f"airflow-{name}" for name in daemons]
    if st.get("spark"):
        stop_group(int(st["spark"]["worker_pid"]))
        stop_group(int(st["spark"]["master_pid"]))
        stopped.append("spark")
    if st.get("ray"):
        cluster = ray_nodes.RayCluster.from_dict(st["ray"])
        ray_nodes.stop_ray_cluster(cluster)
        stopped.append("ray")
    if st.get("redis"):
        stop_group(int(st["redis"]["pid"]))
        stopped.append("redis")
    if st.get("postgres"):
        postgres.stop(Path(st["postgres"]["data_dir"]))
        stopped.append("postgres")
    leftovers = stop_marked(st["cluster_id"])
    if leftovers:
        log.info("Stopped %d stray processes of the cluster: %s", len(leftovers), leftovers)
    state.remove(root)
    return stopped


def main(argv: list[str] | None = None) -> int:
    import json

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = sys.argv[1:] if argv is None else argv
    command = args[0] if args else "status"
    if command == "up":
        executor = args[args.index("--executor") + 1] if "--executor" in args[:-1] else "celery"
        st = up(executor=executor)
        print(f"Airflow {st['airflow']['url']} (user admin, password in {state.state_path()})")
        print(f"Spark {st['spark']['web_url']}  Ray {st['ray']['dashboard_url']}  executor {st['executor']}")
        print(f"cluster-up timings (s): {json.dumps(st['timings'])}")
    elif command == "down":
        print("stopped: " + (", ".join(down()) or "nothing was running"))
    elif command == "status":
        print(json.dumps(status(), indent=2))
    else:
        print(f"unknown command {command!r}; use up, down or status", file=sys.stderr)
        return 2
    return 0
