"""Running the main DAG with ``airflow dags test`` in a fresh Airflow home, for the tests of it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from nuro_ml.airflow_home import ensure_airflow_home

from tests.fixtures.services import free_port

DAG_ID = "av_training_pipeline"
DAY = "2026-11-24"


def airflow_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    airflow = str(Path(sys.executable).with_name("airflow"))
    return subprocess.run([airflow, *args], env=env, capture_output=True, text=True, timeout=1200)


def migrated_env(root: Path, data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a run in a new Airflow home under ``root``, its database migrated."""
    home = ensure_airflow_home(root / "airflow")
    env = dict(os.environ)
    env.update(AIRFLOW_HOME=str(home), NURO_ML_DATA_DIR=str(data_dir), RAY_USAGE_STATS_ENABLED="0", **extra)
    # The test session's unit-test mode would give the run Airflow's unit-test settings, not this home's.
    env.pop("AIRFLOW__CORE__UNIT_TEST_MODE", None)
    migrate = airflow_cli(env, "db", "migrate")
    assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]
    return env


def run_conf(vehicles: list[str], drive_seconds: int, **params: Any) -> dict[str, Any]:
    """The DAG run's parameters for one day of ``vehicles``, with free ports for its Ray head."""
    return {
        "date_from": DAY,
        "date_to": DAY,
        "vehicles": vehicles,
        "drive_seconds": drive_seconds,
        "ray_port": free_port(),
        "dashboard_port": free_port(),
        **params,
    }


def run_main_dag(env: dict[str, str], conf: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return airflow_cli(env, "dags", "test", DAG_ID, DAY, "-c", json.dumps(conf))
