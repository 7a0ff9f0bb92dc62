"""Test-wide setup: an isolated Airflow home and data directory for the whole session.

Airflow reads its configuration when first imported, so the environment is set here, at
collection time, before any test module imports Airflow.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="nuro-ml-tests-"))
os.environ.setdefault("AIRFLOW_HOME", str(_SESSION_DIR / "airflow"))
os.environ.setdefault("NURO_ML_DATA_DIR", str(_SESSION_DIR / "data"))
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DISABLE_DOCKER_CPU_WARNING", "1")
# A local ray.init() in a test would otherwise write ~/.ray/auth_token, which turns token
# authentication on for every Ray cluster started afterwards on this machine.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
Path(os.environ["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)

pytest_plugins = ["tests.fixtures.services"]


def pytest_sessionfinish(session: object, exitstatus: int) -> None:
    """Kill multiprocessing children a failed test left behind; quiet py4j's exit.

    At interpreter exit multiprocessing joins every non-daemon child it started, so one child
    stuck after its test failed would keep pytest from ever exiting.
    """
    import logging
    import multiprocessing

    for child in multiprocessing.active_children():
        child.kill()
        child.join(timeout=10)
    # py4j logs from its gateways' finalizers at interpreter exit, after pytest has closed the
    # streams its handlers write to: a "Logging error" traceback after every run with Spark.
    logging.getLogger("py4j").setLevel(logging.WARNING)
