"""Overhead of the Terraform operator over the bare Terraform CLI on ``terraform/environments/local``.

Both sides provision the same local Ray head (same variables, fresh ports, fresh state) and the
clock covers everything a user waits for until the outputs are known:

* ours: ``TerraformApplyOperator(...).execute()`` without a reviewed plan, i.e. init against the
  provider mirror, plan to a saved plan, ``show -json`` summary, apply of that plan, ``output -json``,
  with event streaming, secret masking and XCom preparation;
* reference: the same five Terraform commands run with ``subprocess.run`` from Python, output captured
  and nothing else (the floor any wrapper pays).

Each provisioned head is destroyed afterwards, outside the timed region. Ray's own start-up takes most
of the time and varies with machine load, so the runs alternate sides and stderr shows how long the
Ray head's creation took on each side (Terraform's own ``elapsed_seconds``), from which the pure
overhead can be read. Prints one line::

    terraform_overhead: ours X s, reference Y s, ratio Z      (ratio = reference / ours; >1: ours faster)

Run: ``python -m benchmarks.terraform_overhead [--repeat N]`` (default 1 pair, about a minute).
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_BENCH_DIR = Path(tempfile.mkdtemp(prefix="nuro-tf-bench-"))
atexit.register(shutil.rmtree, _BENCH_DIR, ignore_errors=True)
os.environ.setdefault("NURO_ML_DATA_DIR", str(_BENCH_DIR / "data"))

from nuro_ml import settings  # noqa: E402  (after NURO_ML_DATA_DIR is set)
from nuro_ml.operators.terraform import TerraformApplyOperator, TerraformDestroyOperator  # noqa: E402
from nuro_ml.terraform_support.binary import find_terraform_binary  # noqa: E402
from nuro_ml.terraform_support.plugins import ensure_plugin_mirror  # noqa: E402

LOCAL_ENV = settings.terraform_dir() / "environments" / "local"
_CREATION = re.compile(r"null_resource\.ray_head: Creation complete after (?:(\d+)m)?(\d+)s")


@dataclass(frozen=True)
class Sample:
    seconds: float
    provisioning_seconds: float


@dataclass
class _TaskInstance:
    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1


def _context(index: int, task_id: str) -> Any:
    """What the operators read from an Airflow context: the task instance's identity."""
    return {"ti": _TaskInstance("bench", f"run-{index}", task_id)}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _variables(tag: str) -> dict[str, Any]:
    runtime = Path(tempfile.mkdtemp(prefix=f"nb-{tag}-", dir="/tmp"))
    return {
        "num_gpus": 2,
        "num_cpus": 2,
        "ray_port": _free_port(),
        "dashboard_port": _free_port(),
        "python": sys.executable,
        "runtime_dir": str(runtime),
        "object_store_memory_mb": 128,
    }


class _CreationTime(logging.Handler):
    """Picks Terraform's "Creation complete after Ns" out of the operator's streamed log."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds = 0.0

    def emit(self, record: logging.LogRecord) -> None:
        match = _CREATION.search(record.getMessage())
        if match:
            self.seconds = int(match.group(1) or 0) * 60 + float(match.group(2))


def run_ours(index: int) -> Sample:
    variables = _variables("ours")
    environment = f"bench-ours-{index}"
    common: dict[str, Any] = {
        "working_dir": str(LOCAL_ENV),
        "environment": environment,
        "variables": variables,
    }
    handler = _CreationTime()
    logging.getLogger("nuro_ml.terraform").addHandler(handler)
    try:
        start = time.perf_counter()
        outputs = TerraformApplyOperator(task_id="apply", **common).execute(_context(index, "apply"))
        elapsed = time.perf_counter() - start
    finally:
        logging.getLogger("nuro_ml.terraform").removeHandler(handler)
        TerraformDestroyOperator(task_id="destroy", **common).execute(_context(index, "destroy"))
        shutil.rmtree(variables["runtime_dir"], ignore_errors=True)
    if outputs.get("gpu_count") != 2:
        raise RuntimeError(f"operator returned unexpected outputs {outputs}")
    return Sample(elapsed, handler.seconds)


def _terraform(binary: str, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([binary, *args], cwd=LOCAL_ENV, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"terraform {args[0]} failed:\n{result.stdout}\n{result.stderr}")
    return result


def run_reference(index: int, binary: str, mirror: Path) -> Sample:
    variables = _variables("ref")
    work = Path(tempfile.mkdtemp(prefix="tf-ref-", dir=_BENCH_DIR))
    env = dict(os.environ, TF_IN_AUTOMATION="1", CHECKPOINT_DISABLE="1", TF_DATA_DIR=str(work / "tfdata"))
    var_args = [arg for name, value in sorted(variables.items()) for arg in ("-var", f"{name}={value}")]
    plan_file = work / "plan.tfplan"
    try:
        start = time.perf_counter()
        _terraform(
            binary,
            ["init", "-input=false", "-no-color", f"-plugin-dir={mirror}",
             f"-backend-config=path={work / 'terraform.tfstate'}", "-lockfile=readonly"],
            env,
        )  # fmt: skip
        _terraform(binary, ["plan", "-input=false", "-json", f"-out={plan_file}", *var_args], env)
        json.loads(_terraform(binary, ["show", "-json", str(plan_file)], env).stdout)
        applied = _terraform(binary, ["apply", "-input=false", "-json", str(plan_file)], env)
        outputs = json.loads(_terraform(binary, ["output", "-json"], env).stdout)
        elapsed = time.perf_counter() - start
    finally:
        _terraform(binary, ["destroy", "-input=false", "-json", "-auto-approve", *var_args], env)
        shutil.rmtree(variables["runtime_dir"], ignore_errors=True)
    if outputs["gpu_count"]["value"] != 2:
        raise RuntimeError(f"reference returned unexpected outputs {outputs}")
    provisioning = 0.0
    for line in applied.stdout.splitlines():
        event = json.loads(line)
        if event.get("type") == "apply_complete":
            provisioning = float(event["hook"].get("elapsed_seconds", 0))
    return Sample(elapsed, provisioning)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeat", type=int, default=1, help="pairs of runs (alternating which side goes first)"
    )
    args = parser.parse_args(argv)
    binary = find_terraform_binary()
    mirror = ensure_plugin_mirror()
    ours: list[Sample] = []
    reference: list[Sample] = []
    # The operator's progress log goes to stdout (Airflow's log configuration captured that stream at
    # import), so stdout is pointed at stderr at the descriptor level while the runs are going on.
    sys.stdout.flush()
    saved_stdout = os.dup(1)
    os.dup2(2, 1)
    try:
        for index in range(args.repeat):
            if index % 2 == 0:
                ours.append(run_ours(index))
                reference.append(run_reference(index, binary, mirror))
            else:
                reference.append(run_reference(index, binary, mirror))
                ours.append(run_ours(index))
    finally:
        sys.stdout.flush()
        os.dup2(saved_stdout, 1)
        os.close(saved_stdout)
        shutil.rmtree(_BENCH_DIR, ignore_errors=True)
    for side, samples in (("ours", ours), ("reference", reference)):
        print(
            f"{side}: total {[round(s.seconds, 2) for s in samples]} s, Ray head creation "
            f"{[s.provisioning_seconds for s in samples]} s, Terraform overhead "
            f"{[round(s.seconds - s.provisioning_seconds, 2) for s in samples]} s",
            file=sys.stderr,
        )
    ours_s = statistics.median(s.seconds for s in ours)
    reference_s = statistics.median(s.seconds for s in reference)
    ratio = reference_s / ours_s
    print(f"terraform_overhead: ours {ours_s:.2f} s, reference {reference_s:.2f} s, ratio {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
