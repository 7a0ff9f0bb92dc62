"""A broken YAML pipeline spec is a steady import error of the real DAG processor until it is fixed.

Deployed like the repository's ``dags/``: specs in ``pipelines/`` next to ``yaml_pipelines.py``
(the DAGs) and ``yaml_pipelines_check.py`` (the import error). The DAG processor refreshes the
bundle every 3 s (the stack's ``[dag_processor] refresh_interval``), which is when Airflow deletes
import errors of paths that are not DAG files. A user checks, over several refreshes and several
parses of the check file, that every look at the import errors (REST API and
``airflow dags list-import-errors``) shows the broken specs with file, line and column, that the
valid pipeline next to them stays active, and that the error is gone once one broken spec is fixed
and the other removed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nuro_ml.settings import REPO_ROOT

from tests.fixtures.airflow_stack import AirflowStack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

CHECK_FILE = "yaml_pipelines_check.py"
GOOD = """\
dag_id: {dag_id}
start_date: 2026-11-01
schedule: null
stages:
  extract: {{operator: bash, args: {{bash_command: "echo extract"}}}}
  train: {{operator: bash, depends_on: [extract], args: {{bash_command: "echo train"}}}}
"""
SPECS = {
    "spec_errors_good.yaml": GOOD.format(dag_id="spec_errors_good"),
    # Fixed by the test.
    "spec_errors_typo.yaml": (
        "dag_id: spec_errors_typo\nstart_date: 2026-11-01\nstages:\n  a: {operator: empty, retires: 2}\n"
    ),
    # Removed by the test.
    "spec_errors_cycle.yaml": (
        "dag_id: spec_errors_cycle\nstart_date: 2026-11-01\nstages:\n"
        "  a: {operator: empty, depends_on: [b]}\n  b: {operator: empty, depends_on: [a]}\n"
    ),
}
EXPECTED = (
    "pipelines/spec_errors_typo.yaml:4:24: stages.a.retires: unknown field 'retires'",
    "pipelines/spec_errors_cycle.yaml:5:24: stages.b.depends_on: dependency cycle: b -> a -> b",
)
#: Parses of the check file, and seconds (at least three bundle refreshes), to watch the error over.
PARSES = 3
MIN_WATCH_SECONDS = 12.0


def api_errors(stack: AirflowStack) -> dict[str, dict[str, Any]]:
    """Import errors by file name, as the REST API (and so the UI) lists them."""
    errors = stack.get_json("/api/v2/importErrors", params={"limit": 100})["import_errors"]
    return {e["filename"]: e for e in errors}


def cli_errors(stack: AirflowStack) -> dict[str, str]:
    """Import errors by file path, as ``airflow dags list-import-errors`` prints them."""
    listed = stack.cli("dags", "list-import-errors", "--output", "json")
    output = (listed.stdout + listed.stderr)[-2000:]
    # Log lines may come first on stdout; the JSON list starts on a line of its own.
    lines = listed.stdout.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("[")), None)
    assert start is not None, output
    rows, _ = json.JSONDecoder().raw_decode("\n".join(lines[start:]))
    # The command exits with 1 when it lists any import error (a check for CI), 0 otherwise.
    assert listed.returncode == (1 if rows else 0), output
    return {row["filepath"]: row["error"] for row in rows}


def dag_state(stack: AirflowStack, dag_id: str) -> dict[str, Any] | None:
    response = stack.api("GET", f"/api/v2/dags/{dag_id}")
    return dict(response.json()) if response.status_code == 200 else None


def wait_until(condition: Any, what: str, stack: AirflowStack, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{what} not within {timeout:.0f} s; import errors {api_errors(stack)}; "
                f"dag-processor log:\n{stack.daemon('dag-processor').tail()}"
            )
        stack.check_alive()
        time.sleep(0.5)


def touch(path: Path) -> None:
    """A newer modification time, as a deployment of the file gives it: the DAG processor re-parses
    files changed since their last parse without waiting for ``min_file_process_interval``."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


@pytest.fixture
def deployed(airflow_stack: AirflowStack, tmp_path: Path) -> Iterator[AirflowStack]:
    """The specs, the loader and the check file are in the stack's DAG folder; removed after."""
    for name, text in SPECS.items():
        (tmp_path / name).write_text(text)
    airflow_stack.add_pipeline_specs([tmp_path / name for name in SPECS])
    airflow_stack.add_dag_files([REPO_ROOT / "dags" / CHECK_FILE])
    yield airflow_stack
    # Later tests on the shared stack wait for their DAGs and fail on any import error.
    for name in SPECS:
        (airflow_stack.dags_folder / "pipelines" / name).unlink(missing_ok=True)
    (airflow_stack.dags_folder / CHECK_FILE).unlink(missing_ok=True)
    wait_until(lambda: CHECK_FILE not in api_errors(airflow_stack), "cleanup", airflow_stack)


def test_broken_spec_error_is_steady_across_parses_and_clears_when_fixed(deployed: AirflowStack) -> None:
    stack = deployed
    wait_until(lambda: CHECK_FILE in api_errors(stack), "the check file's import error", stack)
    wait_until(lambda: dag_state(stack, "spec_errors_good") is not None, "the valid pipeline", stack)

    parse_times: set[str] = set()
    cli_looks = 0
    started = time.monotonic()
    while len(parse_times) < PARSES or time.monotonic() - started < MIN_WATCH_SECONDS:
        errors = api_errors(stack)
        assert CHECK_FILE in errors, f"error gone after {time.monotonic() - started:.1f} s: {errors}"
        text = errors[CHECK_FILE]["stack_trace"]
        assert all(line in text for line in EXPECTED), text
        # Only the check file fails: no error under the spec paths or the loader, whose DAGs run.
        assert not [name for name in errors if name.startswith(("pipelines/", "yaml_pipelines.py"))], errors
        good = dag_state(stack, "spec_errors_good")
        assert good is not None and not good["is_stale"] and not good["has_import_errors"], good
        if errors[CHECK_FILE]["timestamp"] not in parse_times:
            parse_times.add(errors[CHECK_FILE]["timestamp"])
            from_cli = cli_errors(stack)
            cli_looks += 1
            assert CHECK_FILE in from_cli, from_cli
            assert all(line in from_cli[CHECK_FILE] for line in EXPECTED), from_cli[CHECK_FILE]
            touch(stack.dags_folder / CHECK_FILE)
        stack.check_alive()
        time.sleep(0.5)
    assert cli_looks >= PARSES
    assert dag_state(stack, "spec_errors_typo") is None and dag_state(stack, "spec_errors_cycle") is None

    # Fix one spec, remove the other; the DAG processor notices on its own at the next parse.
    specs = stack.dags_folder / "pipelines"
    (specs / "spec_errors_typo.yaml").write_text(GOOD.format(dag_id="spec_errors_typo"))
    (specs / "spec_errors_cycle.yaml").unlink()

    wait_until(lambda: CHECK_FILE not in api_errors(stack), "the error cleared", stack)
    wait_until(lambda: dag_state(stack, "spec_errors_typo") is not None, "the fixed pipeline", stack)
    assert CHECK_FILE not in cli_errors(stack)
    good = dag_state(stack, "spec_errors_good")
    assert good is not None and not good["is_stale"], good
