"""Ask the installed Airflow (3.3.2, CeleryExecutor) what it accepts, in a process of its own.

Airflow builds its CLI from the configured executor when first imported, so the checks run in
a fresh interpreter configured like the deployment. Reads a JSON request on stdin::

    {"argv": [["scheduler"], ...], "options": [["core", "executor"], ...],
     "celery": [["--app", "pkg.module.app", "inspect", "ping"], ...]}

and writes a JSON report to the file named by its one argument: for each argv the parse error
(None when accepted), for each option its default (or a "missing" marker), for each celery
command line the error (None when it parses and its ``--app`` resolves to a Celery application).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import sys
from typing import Any

MISSING = "<missing>"


def _parse_airflow(parser: Any, argv: list[str]) -> str | None:
    sink = io.StringIO()
    try:
        with contextlib.redirect_stderr(sink), contextlib.redirect_stdout(sink):
            parser.parse_args(argv)
    except SystemExit as exc:
        if exc.code in (0, None):
            return None
        lines = [line for line in sink.getvalue().splitlines() if "error" in line.lower()]
        return lines[-1] if lines else f"exit code {exc.code}"
    return None


def _check_celery(argv: list[str]) -> str | None:
    import click
    from celery import Celery
    from celery.bin.celery import celery as celery_cli

    from tests.unit.deploy.deploy_files import parse_click_command

    try:
        sub = parse_click_command(celery_cli, "celery", argv)
    except click.ClickException as exc:
        return exc.format_message()
    app_path = sub.parent.params.get("app")
    if not app_path:
        return "no --app given"
    module_name, _, attr = str(app_path).rpartition(".")
    try:
        app = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        return f"--app {app_path}: {exc}"
    if not isinstance(app, Celery):
        return f"--app {app_path} is a {type(app).__name__}, not a Celery application"
    return None


def main() -> int:
    request = json.load(sys.stdin)
    from airflow.cli import cli_parser
    from airflow.configuration import conf

    parser = cli_parser.get_parser()
    description = conf.configuration_description
    report: dict[str, Any] = {
        "argv": [_parse_airflow(parser, argv) for argv in request.get("argv", [])],
        "options": [
            (description.get(section, {}).get("options", {}).get(key) or {}).get("default", MISSING)
            if key in description.get(section, {}).get("options", {})
            else MISSING
            for section, key in request.get("options", [])
        ],
        "celery": [_check_celery(argv) for argv in request.get("celery", [])],
    }
    # Airflow may log to stdout while importing; the report goes to its own file.
    with open(sys.argv[1], "w", encoding="utf-8") as handle:
        json.dump(report, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
