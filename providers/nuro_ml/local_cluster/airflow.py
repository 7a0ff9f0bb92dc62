"""Airflow 3 daemons on loopback (api-server, dag-processor, scheduler, triggerer) and a REST client.

The daemons share one environment: a PostgreSQL metadata database, the LocalExecutor (unless the
cluster's executor settings, see :mod:`nuro_ml.local_cluster.celery`, replace it), the
simple auth manager with a pre-seeded passwords file, and connections given as
``AIRFLOW_CONN_*`` variables (as the compose file gives them to its containers).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from nuro_ml.local_cluster.processes import alive, spawn, tail

AIRFLOW = str(Path(sys.executable).with_name("airflow"))
DAEMONS = ("api-server", "dag-processor", "scheduler", "triggerer")
#: User name -> role of the simple auth manager.
ROLES = {"admin": "admin", "viewer": "viewer"}
TERMINAL_RUN_STATES = frozenset({"success", "failed"})


class AirflowClusterError(RuntimeError):
    """An Airflow daemon did not start, or the API did not do what was waited for."""


def build_env(
    base: Mapping[str, str],
    *,
    home: Path,
    dags: Path,
    plugins: Path,
    db_url: str,
    port: int,
    passwords_file: Path,
    connections: Mapping[str, Mapping[str, Any]],
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of every daemon (and so of every task): ``base`` without ``AIRFLOW__*``."""
    from cryptography.fernet import Fernet

    env = {k: v for k, v in base.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))}
    async_url = db_url.replace("postgresql+psycopg://", "postgresql+psycopg_async://", 1)
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(plugins),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        # LocalExecutor forks this many workers up front; 4 fits a 2-core machine.
        AIRFLOW__CORE__PARALLELISM="4",
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
        # Runs start only when triggered (API, UI, CLI): no scheduled run of any DAG in the folder
        # competes with them for the two cores.
        AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE="False",
        AIRFLOW__CORE__FERNET_KEY=Fernet.generate_key().decode(),
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=",".join(f"{u}:{r}" for u, r in ROLES.items()),
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(passwords_file),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=db_url,
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC=async_url,
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__API__HOST="127.0.0.1",
        AIRFLOW__API__SECRET_KEY=secrets.token_hex(16),
        AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(32),
        AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE="True",
        AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="10",
        AIRFLOW__LOGGING__BASE_LOG_FOLDER=str(home / "logs"),
        RAY_USAGE_STATS_ENABLED="0",
    )
    for conn_id, conn in connections.items():
        env[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(dict(conn))
    env.update(extra or {})
    return env


def write_passwords(path: Path) -> dict[str, str]:
    """Random passwords for every user, in the simple auth manager's file format (mode 0600)."""
    passwords = {user: secrets.token_urlsafe(12) for user in ROLES}
    path.touch(mode=0o600)
    path.write_text(json.dumps(passwords))
    return passwords


def cli(env: Mapping[str, str], *args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AIRFLOW, *args], env=dict(env), capture_output=True, text=True, timeout=timeout, check=False
    )


def migrate(env: Mapping[str, str], log: Path) -> None:
    done = cli(env, "db", "migrate", timeout=600)
    log.write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise AirflowClusterError(f"airflow db migrate failed:\n{(done.stdout + done.stderr)[-3000:]}")


def start_daemon(name: str, env: Mapping[str, str], logs: Path, port: int) -> int:
    """Start ``airflow <name>`` in its own process group; returns its PID."""
    args = ["api-server", "--port", str(port)] if name == "api-server" else [name]
    return spawn([AIRFLOW, *args], env=env, log=logs / f"{name}.log").pid


def health(base_url: str) -> dict[str, Any]:
    try:
        response = httpx.get(f"{base_url}/api/v2/monitor/health", timeout=5)
    except httpx.HTTPError:
        return {}
    return dict(response.json()) if response.status_code == 200 else {}


def healthy(base_url: str) -> bool:
    state = health(base_url)
    parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
    return bool(state) and all((state.get(p) or {}).get("status") == "healthy" for p in parts)


def wait_healthy(base_url: str, pids: Mapping[str, int], logs: Path, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not healthy(base_url):
        for name, pid in pids.items():
            if not alive(pid):
                raise AirflowClusterError(
                    f"airflow {name} exited; its log ends with:\n{tail(logs / f'{name}.log')}"
                )
        if time.monotonic() > deadline:
            raise AirflowClusterError(f"Airflow not healthy within {timeout:.0f} s: {health(base_url)}")
        time.sleep(1.0)


@dataclass
class ApiClient:
    """The Airflow REST API as a user sees it: JWT from ``POST /auth/token``, then ``/api/v2``."""

    base_url: str
    passwords: Mapping[str, str]
    _tokens: dict[str, str] = field(default_factory=dict, repr=False)

    def token(self, user: str = "admin") -> str:
        if user not in self._tokens:
            response = httpx.post(
                f"{self.base_url}/auth/token",
                json={"username": user, "password": self.passwords[user]},
                timeout=30,
            )
            if response.status_code != 201:
                raise AirflowClusterError(
                    f"login of {user!r} failed: {response.status_code} {response.text[:300]}"
                )
            self._tokens[user] = response.json()["access_token"]
        return self._tokens[user]

    def request(
        self,
        method: str,
        path: str,
        *,
        user: str | None = "admin",
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        """Call the API as ``user`` (``None``: without credentials)."""
        headers = {} if user is None else {"Authorization": f"Bearer {self.token(user)}"}
        return httpx.request(
            method, f"{self.base_url}{path}", headers=headers, json=json_body, params=params, timeout=60
        )

    def get_json(self, path: str, *, user: str = "admin", params: Mapping[str, Any] | None = None) -> Any:
        response = self.request("GET", path, user=user, params=params)
        if response.status_code != 200:
            raise AirflowClusterError(f"GET {path} -> {response.status_code}: {response.text[:500]}")
        return response.json()

    def wait_for_dag(self, dag_id: str, timeout: float = 300.0) -> None:
        """Wait until the DAG is serialized; fail early on an import error of its own file."""
        deadline = time.monotonic() + timeout
        while self.request("GET", f"/api/v2/dags/{dag_id}/details").status_code != 200:
            errors = self.get_json("/api/v2/importErrors")["import_errors"]
            mine = [e for e in errors if Path(e["filename"]).stem == dag_id]
            if mine:
                raise AirflowClusterError(f"{dag_id} does not import:\n{mine[0]['stack_trace']}")
            if time.monotonic() > deadline:
                raise AirflowClusterError(f"DAG {dag_id} not parsed within {timeout:.0f} s")
            time.sleep(2.0)

    def trigger(self, dag_id: str, conf: Mapping[str, Any], *, user: str = "admin") -> str:
        """``POST /api/v2/dags/{dag_id}/dagRuns``; returns the new run id."""
        response = self.request(
            "POST",
            f"/api/v2/dags/{dag_id}/dagRuns",
            user=user,
            json_body={"logical_date": None, "conf": dict(conf)},
        )
        if response.status_code != 200:
            raise AirflowClusterError(f"trigger {dag_id} -> {response.status_code}: {response.text[:500]}")
        return str(response.json()["dag_run_id"])

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self.get_json(f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}"))

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 1200.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            run = self.run(dag_id, run_id)
            if run["state"] in TERMINAL_RUN_STATES:
                return run
            if time.monotonic() > deadline:
                raise AirflowClusterError(f"run {dag_id}/{run_id} still {run['state']} after {timeout:.0f} s")
            time.sleep(2.0)

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances"
        return {ti["task_id"]: ti for ti in self.get_json(path)["task_instances"]}

    def wait_for_task(
        self, dag_id: str, run_id: str, task_id: str, states: frozenset[str], timeout: float = 900.0
    ) -> dict[str, Any]:
        """Poll until the task instance is in one of ``states``; fail if the run ends first."""
        deadline = time.monotonic() + timeout
        while True:
            ti = self.task_instances(dag_id, run_id).get(task_id) or {}
            if ti.get("state") in states:
                return ti
            run_state = self.run(dag_id, run_id)["state"]
            if run_state in TERMINAL_RUN_STATES or time.monotonic() > deadline:
                raise AirflowClusterError(
                    f"{dag_id}/{run_id}/{task_id} never reached {sorted(states)}: it is {ti.get('state')}, "
                    f"the run {run_state}"
                )
            time.sleep(0.3)

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        path = (
            f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}"
            f"/xcomEntries/{key}"
        )
        return self.get_json(path, params={"deserialize": "true", "stringify": "false"})["value"]
