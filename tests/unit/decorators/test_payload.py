"""The function, arguments and return value of @task.ray / @task.kuberay: encoding, limits, bootstrap."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime

import pytest
from airflow.sdk import DAG, task
from nuro_ml.decorators import payload
from nuro_ml.exceptions import RayJobError
from nuro_ml.operators.ray import RESULT_MARKER, parse_result_line


def _run_bootstrap(encoded: str) -> subprocess.CompletedProcess[str]:
    """The job's entrypoint exactly as Ray runs it: a shell command with the payload in its environment."""
    command = payload.bootstrap_command(sys.executable, RESULT_MARKER)
    env = {**os.environ, payload.PAYLOAD_ENV: encoded}
    return subprocess.run(command, shell=True, env=env, capture_output=True, text=True, timeout=60)


SOURCE = textwrap.dedent(
    """
    def scene_stats(rows, *, scale=1.0):
        import statistics

        speeds = [r["speed"] * scale for r in rows]
        return {"mean": statistics.fmean(speeds), "n": len(speeds)}
    """
)


def test_the_bootstrap_calls_the_function_and_prints_its_json_result() -> None:
    encoded = payload.encode_payload(
        source=SOURCE,
        function_name="scene_stats",
        args=[[{"speed": 2.0}, {"speed": 4.0}]],
        kwargs={"scale": 0.5},
    )
    done = _run_bootstrap(encoded)
    assert done.returncode == 0, done.stderr
    result = parse_result_line(done.stdout)
    assert payload.return_value(result, "job") == {"mean": 1.5, "n": 2}


def test_an_exception_fails_the_job_with_a_traceback_quoting_the_function() -> None:
    source = "def broken(x):\n    return {'ratio': 1 / x}\n"
    done = _run_bootstrap(payload.encode_payload(source=source, function_name="broken", args=[0], kwargs={}))
    assert done.returncode != 0
    assert "Traceback (most recent call last)" in done.stderr
    assert "return {'ratio': 1 / x}" in done.stderr
    assert done.stderr.rstrip().endswith("ZeroDivisionError: division by zero")
    assert RESULT_MARKER not in done.stdout


def test_a_return_value_that_is_not_json_fails_the_job_with_the_reason() -> None:
    source = "def opaque():\n    return object()\n"
    done = _run_bootstrap(payload.encode_payload(source=source, function_name="opaque", args=[], kwargs={}))
    assert done.returncode != 0
    assert "opaque returned a value that is not JSON" in done.stderr


def test_a_return_value_over_the_limit_fails_the_job_naming_the_limit() -> None:
    source = f"def big():\n    return 'x' * {payload.MAX_RETURN_BYTES}\n"
    done = _run_bootstrap(payload.encode_payload(source=source, function_name="big", args=[], kwargs={}))
    assert done.returncode != 0
    assert f"over the limit of {payload.MAX_RETURN_BYTES}" in done.stderr


def test_arguments_that_are_not_json_are_refused_before_submission() -> None:
    with pytest.raises(
        RayJobError, match=r"train: argument 'since' cannot be sent to the Ray job: it is not JSON"
    ):
        payload.encode_payload(source="", function_name="train", args=[], kwargs={"since": datetime.now(UTC)})


def test_arguments_over_the_limit_are_refused_before_submission() -> None:
    noise = os.urandom(payload.MAX_PAYLOAD_BYTES).hex()  # incompressible
    with pytest.raises(RayJobError, match=f"over the limit of {payload.MAX_PAYLOAD_BYTES}"):
        payload.encode_payload(source="", function_name="train", args=[noise], kwargs={})


def test_a_missing_result_line_is_an_error() -> None:
    with pytest.raises(RayJobError, match="Ray job raysubmit-1 succeeded but printed no return value"):
        payload.return_value({"submission_id": "raysubmit-1"}, "Ray job raysubmit-1")


def test_task_ray_ships_the_function_without_its_decorator() -> None:
    with DAG("decorated", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=UTC)):

        @task.ray(address="http://127.0.0.1:8265", ray_conn_id=None)
        def add(a: int, b: int) -> int:
            return a + b

        add(1, 2)

    operator = add(3, 4).operator
    source = operator.get_python_source()
    assert "@task" not in source and source.lstrip().startswith("def add(")
    assert operator.op_args == (3, 4) or list(operator.op_args) == [3, 4]
    assert "entrypoint" not in operator.template_fields
    encoded = payload.encode_payload(
        source=source, function_name="add", args=operator.op_args, kwargs=operator.op_kwargs
    )
    done = _run_bootstrap(encoded)
    assert json.loads(done.stdout.split(RESULT_MARKER, 1)[1]) == {"return_value": 7}


def test_task_kuberay_builds_a_rayjob_that_runs_the_function() -> None:
    from nuro_ml.kube.rayjob import WorkerGroup

    with DAG("decorated_kuberay", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=UTC)):

        @task.kuberay(
            namespace="ml",
            rayjob={"workers": [WorkerGroup(name="gpu", replicas=2, gpus=1, gpu_type="A100")]},
        )
        def train(epochs: int) -> dict:
            return {"epochs": epochs}

        train(3)

    operator = train(5).operator
    assert operator.rayjob.entrypoint == payload.bootstrap_command("python", RESULT_MARKER)
    assert operator.rayjob.workers[0].gpus == 1


def test_task_kuberay_refuses_an_entrypoint_of_its_own() -> None:
    from nuro_ml.exceptions import RayJobSpecInvalidError

    with DAG("decorated_kuberay_bad", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=UTC)):

        @task.kuberay(rayjob={"entrypoint": "python train.py"})
        def train() -> None:
            return None

        with pytest.raises(RayJobSpecInvalidError, match="must not set entrypoint"):
            train()
