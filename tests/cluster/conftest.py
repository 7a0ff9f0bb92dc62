"""Tests against the running local cluster of ``make cluster-up`` (``make cluster-test``).

Everything is read from ``.cluster/state.json``; nothing here starts or stops the cluster
itself (the fault tests stop and restart single daemons and put them back). Figures a person
checks after a run (faults injected, tasks retried, rows checked, leases audited) are written to
``.cluster/figures.json`` and printed at the end.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from nuro_ml.local_cluster import state
from nuro_ml.local_cluster.airflow import ApiClient

DAG_ID = "av_training_pipeline"
DAY = "2026-11-20"
VEHICLE = "veh-001"
DRIVE_SECONDS = 70


@dataclass
class Figures:
    faults_injected: list[str] = field(default_factory=list)
    tasks_retried: dict[str, int] = field(default_factory=dict)
    rows_checked: int = 0
    leases_audited: int = 0
    #: Fault -> how the run came back from it.
    recoveries: dict[str, str] = field(default_factory=dict)
    runs: dict[str, float] = field(default_factory=dict)


@dataclass
class Cluster:
    state: dict[str, Any]
    api: ApiClient
    figures: Figures

    @property
    def root(self) -> Path:
        return Path(self.state["root"])

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def task_logs(self) -> Path:
        return Path(self.state["airflow"]["home"]) / "logs"

    @property
    def ledger_url(self) -> str:
        return str(self.state["postgres"]["urls"]["ledger"])

    def secrets(self) -> dict[str, str]:
        """Every secret cluster-up set: database, Redis and Airflow user passwords."""
        found = {
            "postgres": self.state["postgres"]["password"],
            "redis": self.state["redis"]["password"],
        }
        found.update({f"airflow-{u}": p for u, p in self.state["airflow"]["passwords"].items()})
        return found

    def conf(self, **overrides: Any) -> dict[str, Any]:
        """Trigger conf of a small cluster-mode run: one vehicle, a 70 s drive (seven scenes, enough
        to train and test)."""
        conf: dict[str, Any] = {
            "date_from": DAY,
            "date_to": DAY,
            "vehicles": [VEHICLE],
            "drive_seconds": DRIVE_SECONDS,
            "gpus": 2,
            "num_boost_round": 10,
            "spark_conn_id": "spark_default",
            "ray_conn_id": "ray_default",
        }
        conf.update(overrides)
        return conf

    def fresh_day(self) -> str:
        """A day without drive logs yet: its ETL, features and training all do real work."""
        day = date(2026, 10, 1)
        while (self.data_dir / "raw" / f"date={day.isoformat()}").exists():
            day += timedelta(days=1)
        return day.isoformat()

    def run_to_end(self, run_id: str, label: str) -> dict[str, Any]:
        started = time.monotonic()
        run = self.api.wait_for_run(DAG_ID, run_id, timeout=1500)
        self.figures.runs[label] = round(time.monotonic() - started, 1)
        for task_id, ti in self.api.task_instances(DAG_ID, run_id).items():
            if int(ti.get("try_number") or 0) > 1:
                key = f"{label}:{task_id}"
                self.figures.tasks_retried[key] = int(ti["try_number"]) - 1
        return run


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    st = state.load()
    if st is None:
        pytest.fail(f"no cluster state at {state.state_path()}: run `make cluster-up` first")
    handle = Cluster(st, ApiClient(st["airflow"]["url"], st["airflow"]["passwords"]), Figures())
    yield handle
    out = handle.root / "figures.json"
    out.write_text(json.dumps(handle.figures.__dict__, indent=2))
    print(f"\ncluster figures ({out}): {json.dumps(handle.figures.__dict__)}")
