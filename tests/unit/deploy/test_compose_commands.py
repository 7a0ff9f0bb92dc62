"""Every command the Compose services and their healthchecks run is one the installed tools accept.

The image installs the locked packages, so the Airflow, Celery, Ray and Spark in this
virtualenv are the ones in the containers: their own argument parsers judge the command lines.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest

from tests.unit.deploy.conftest import BAD_AIRFLOW_ARGV, BAD_CELERY_ARGV, BAD_OPTION
from tests.unit.deploy.deploy_files import (
    check_nuro_ml,
    check_python,
    healthcheck_argv,
    load_compose,
    parse_click_command,
)

COMPOSE = load_compose()
SERVICES = sorted(COMPOSE["services"])
VENV_BIN = Path(sys.executable).parent
#: The official image's entrypoint runs `airflow <args>` unless the command starts with these.
AIRFLOW_ENTRYPOINT_PASSTHROUGH = ("airflow", "python", "bash")
DUMB_INIT = ["/usr/bin/dumb-init", "--"]
SPARK_MAINS = {"org.apache.spark.deploy.master.Master", "org.apache.spark.deploy.worker.Worker"}


def argvs(service: dict[str, Any]) -> list[list[str]]:
    found = [[str(p) for p in service["command"]]] if service.get("command") else []
    check = healthcheck_argv(service)
    return found + ([check] if check else [])


def check_ray(argv: list[str]) -> None:
    from ray.scripts.scripts import cli

    assert argv[0] == "ray"
    parse_click_command(cli, "ray", argv[1:])


def spark_process(argv: list[str]) -> subprocess.Popen[str]:
    """Run Spark's own argument parser: with ``--help`` last, it exits 0 only if every option
    before it is valid."""
    assert argv[0] == "spark-class" and argv[1] in SPARK_MAINS, argv
    # As in the image, the environment's interpreter comes first on PATH: Spark's launcher
    # finds its home through the pyspark package of that interpreter.
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    return subprocess.Popen(
        [str(VENV_BIN / "spark-class"), *argv[1:], "--help"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def test_entrypoints_match_what_each_service_runs() -> None:
    for name in SERVICES:
        service = COMPOSE["services"][name]
        if not str(service.get("image", "")).startswith("nuro-ml-platform:"):
            continue
        command = service["command"]
        if "entrypoint" in service:
            assert service["entrypoint"] == DUMB_INIT, name
            assert command[0] != "airflow", f"{name}: airflow commands need the image's entrypoint"
        else:
            assert command[0] in AIRFLOW_ENTRYPOINT_PASSTHROUGH, (
                f"{name}: the entrypoint would run airflow {command}"
            )


def test_programs_are_installed_by_the_locked_packages() -> None:
    for name in SERVICES:
        service = COMPOSE["services"][name]
        if not str(service.get("image", "")).startswith("nuro-ml-platform:"):
            continue
        for argv in argvs(service):
            program = argv[0]
            if program == "curl":
                continue  # part of the Airflow base image, not of the lock
            assert shutil.which(program, path=str(VENV_BIN)), f"{name}: {program} is not installed"


@pytest.mark.parametrize("name", SERVICES)
def test_airflow_and_celery_command_lines_parse(name: str, airflow_answers: Any) -> None:
    for argv in argvs(COMPOSE["services"][name]):
        if argv[0] == "airflow":
            assert airflow_answers.argv_error(argv[1:]) is None, f"{name}: {argv}"
        elif argv[0] == "celery":
            assert airflow_answers.celery_error(argv[1:]) is None, f"{name}: {argv}"


def test_the_airflow_probe_rejects_what_airflow_rejects(airflow_answers: Any) -> None:
    assert "invalid choice: 'wrker'" in (airflow_answers.argv_error(BAD_AIRFLOW_ARGV) or "")
    assert airflow_answers.option_default(*BAD_OPTION) == "<missing>"
    assert "nope" in (airflow_answers.celery_error(BAD_CELERY_ARGV) or "")


@pytest.mark.parametrize("name", SERVICES)
def test_python_and_nuro_ml_command_lines_resolve(name: str) -> None:
    for argv in argvs(COMPOSE["services"][name]):
        if argv[0] == "python":
            check_python(argv)
        elif argv[0] == "nuro-ml":
            check_nuro_ml(argv)


def test_python_and_nuro_ml_checks_catch_typos() -> None:
    with pytest.raises(AssertionError, match="migrat"):
        check_python(
            ["python", "-c", "from nuro_ml.capacity.ledger import QuotaLedger; QuotaLedger().migrat()"]
        )
    with pytest.raises(AssertionError, match="no module"):
        check_python(["python", "-m", "nuro_ml.no_such_module"])
    with pytest.raises(AssertionError, match="rejects"):
        check_nuro_ml(["nuro-ml", "gen-logz"])


def test_ray_command_lines_parse() -> None:
    checked = 0
    for name in SERVICES:
        for argv in argvs(COMPOSE["services"][name]):
            if argv[0] == "ray":
                check_ray(argv)
                checked += 1
    assert checked >= 4  # head and worker, each with its healthcheck
    with pytest.raises(click.UsageError, match="--prot"):
        check_ray(["ray", "start", "--head", "--prot=6379"])


def test_spark_command_lines_parse() -> None:
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.fail("Java 17 is needed to run Spark's argument parser (the CI installs it)")
    commands = [
        [str(p) for p in service["command"]]
        for service in COMPOSE["services"].values()
        if service.get("command") and service["command"][0] == "spark-class"
    ]
    assert {argv[1] for argv in commands} == SPARK_MAINS
    bad = [
        "spark-class",
        "org.apache.spark.deploy.worker.Worker",
        "--cores",
        "two",
        "spark://spark-master:7077",
    ]
    processes = [(argv, spark_process(argv)) for argv in [*commands, bad]]
    outputs = {tuple(argv): proc.communicate(timeout=120)[0] for argv, proc in processes}
    codes = {tuple(argv): proc.returncode for argv, proc in processes}
    for argv in commands:
        code, output = codes[tuple(argv)], outputs[tuple(argv)]
        assert code == 0, f"{argv} rejected by Spark:\n{output[-2000:]}"
    assert codes[tuple(bad)] != 0
