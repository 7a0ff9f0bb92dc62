from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.deploy.deploy_files import (
    HELM_DIR,
    REPO,
    environment,
    healthcheck_argv,
    load_compose,
)

#: Requests every probe carries so the tests can show the probe rejects what it should.
BAD_AIRFLOW_ARGV = ["celery", "wrker"]
BAD_OPTION = ("core", "no_such_option_anywhere")
BAD_CELERY_ARGV = ["--app", "airflow.providers.celery.executors.celery_executor.nope", "inspect", "ping"]
#: Defaults the port checks rely on.
PORT_OPTIONS = [
    ("scheduler", "scheduler_health_check_server_port"),
    ("logging", "trigger_log_server_port"),
    ("logging", "worker_log_server_port"),
]


@dataclass
class AirflowAnswers:
    argv_errors: dict[tuple[str, ...], str | None] = field(default_factory=dict)
    option_defaults: dict[tuple[str, str], Any] = field(default_factory=dict)
    celery_errors: dict[tuple[str, ...], str | None] = field(default_factory=dict)

    def argv_error(self, argv: Iterable[str]) -> str | None:
        return self.argv_errors[tuple(argv)]

    def option_default(self, section: str, key: str) -> Any:
        return self.option_defaults[(section, key)]

    def celery_error(self, argv: Iterable[str]) -> str | None:
        return self.celery_errors[tuple(argv)]


def _option_of(env_name: str) -> tuple[str, str] | None:
    if not env_name.startswith("AIRFLOW__"):
        return None
    section, _, key = env_name.removeprefix("AIRFLOW__").partition("__")
    return section.lower(), key.lower()


def airflow_requests(
    compose: dict[str, Any],
) -> tuple[list[list[str]], list[tuple[str, str]], list[list[str]]]:
    """Every airflow command line, config option and celery command the assets use."""
    argvs: list[list[str]] = [BAD_AIRFLOW_ARGV]
    options: list[tuple[str, str]] = [BAD_OPTION, *PORT_OPTIONS]
    celery: list[list[str]] = [BAD_CELERY_ARGV]
    for service in compose["services"].values():
        for argv in (service.get("command"), healthcheck_argv(service)):
            if isinstance(argv, list) and argv and argv[0] == "airflow":
                argvs.append(argv[1:])
            if isinstance(argv, list) and argv and argv[0] == "celery":
                celery.append(argv[1:])
        options.extend(filter(None, (_option_of(name) for name in environment(service))))
    values = yaml.safe_load((HELM_DIR / "airflow" / "values.yaml").read_text())
    for section, settings in (values.get("config") or {}).items():
        options.extend((section, key) for key in settings)
    for item in values.get("env") or []:
        option = _option_of(item["name"])
        if option:
            options.append(option)
    return argvs, options, celery


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="session")
def airflow_answers(compose: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> AirflowAnswers:
    argvs, options, celery = airflow_requests(compose)
    home = tmp_path_factory.mktemp("airflow-probe")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__EXECUTOR="CeleryExecutor",
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
    )
    report_path = home / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.unit.deploy.airflow_probe", str(report_path)],
        input=json.dumps({"argv": argvs, "options": options, "celery": celery}),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(Path(report_path).read_text())
    return AirflowAnswers(
        argv_errors={tuple(a): e for a, e in zip(argvs, report["argv"], strict=True)},
        option_defaults={tuple(o): d for o, d in zip(options, report["options"], strict=True)},  # type: ignore[misc]
        celery_errors={tuple(a): e for a, e in zip(celery, report["celery"], strict=True)},
    )
