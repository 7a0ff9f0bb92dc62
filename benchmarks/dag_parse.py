"""DAG parse time for 1,000 pipelines: our YAML specs vs dag-factory YAML vs plain Python files.

The same 1,000 DAGs (eight BashOperator tasks in a chain, one with its own retries, daily
schedule, tags, owner and default retries) are written three ways into a temporary DAGs
folder each:

* ours: ``pipelines/*.yaml`` specs next to a copy of ``dags/yaml_pipelines.py``;
* dag-factory 1.1: one YAML file per DAG loaded by ``dagfactory.load_yaml_dags`` from a
  loader file, its documented entry point;
* plain Python: one ``.py`` DAG file per DAG.

Each folder is parsed by Airflow's ``DagBag`` in a fresh interpreter (Airflow and the
standard operators are imported before the clock starts, so only parsing is timed);
every run must yield all 1,000 DAGs and no import error. Parsing is single-threaded CPU
work, so the figures are the parsing process's CPU time, which stays meaningful on a
busy machine; wall-clock times are printed too (stderr), with a note if ours exceeds
Airflow's default 30 s DAG-file import timeout. Each variant runs ``--repeat`` times:
the first run of ours fills the spec cache and the first Python run writes
``__pycache__``, so steady-state figures are the best of the later runs. Prints::

    dag_parse_1000: ours X ms/DAG, reference Y ms/DAG, ratio Z          (dag-factory, steady state)
    dag_parse_1000_python: ours X ms/DAG, reference Y ms/DAG, ratio Z   (plain Python, steady state)
    dag_parse_1000_cold: ours X ms/DAG, reference Y ms/DAG, ratio Z     (ours on first parse, no cache)

Run: ``python -m benchmarks.dag_parse [--count N] [--repeat R]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
LOADER = REPO_ROOT / "dags" / "yaml_pipelines.py"
STAGES = (
    "provision",
    "etl",
    "feast_apply",
    "feast_materialize",
    "wait_for_gpus",
    "train",
    "release",
    "teardown",
)
BASH = "airflow.providers.standard.operators.bash.BashOperator"
#: Airflow's default ``[core] dagbag_import_timeout``, which one DAG file must load within.
IMPORT_TIMEOUT = 30

RUNNER = """
import json, sys, time
from airflow.dag_processing.dagbag import DagBag
from airflow.providers.standard.operators.bash import BashOperator  # noqa: F401 - same warm imports for all
from airflow.sdk import DAG  # noqa: F401
started, cpu_started = time.perf_counter(), time.process_time()
bag = DagBag(dag_folder=sys.argv[1])
wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
errors = {path: text[:300] for path, text in bag.import_errors.items()}
print(json.dumps({"wall": wall, "cpu": cpu, "dags": len(bag.dags), "errors": errors}))
"""


def _command(index: int, stage: str) -> str:
    return f"echo {stage} {index} {{{{ ds }}}}"


def write_ours(folder: Path, count: int) -> None:
    (folder / "pipelines").mkdir(parents=True)
    shutil.copy(LOADER, folder / "yaml_pipelines.py")
    for i in range(count):
        lines = [
            f"dag_id: pipe_{i:04d}",
            f"description: benchmark pipeline {i}",
            'schedule: "@daily"',
            "start_date: 2026-11-01",
            "catchup: false",
            "owner: ml-platform",
            f"tags: [bench, team-{i % 7}]",
            "default_retries: 2",
            "stages:",
        ]
        previous = None
        for stage in STAGES:
            lines.append(f"  {stage}:")
            lines.append("    operator: bash")
            if previous:
                lines.append(f"    depends_on: [{previous}]")
            if stage == "train":
                lines.append("    retries: 1")
            lines.append(f'    args: {{bash_command: "{_command(i, stage)}"}}')
            previous = stage
        (folder / "pipelines" / f"pipe_{i:04d}.yaml").write_text("\n".join(lines) + "\n")


def write_dagfactory(folder: Path, count: int) -> None:
    configs = folder / "configs"
    configs.mkdir(parents=True)
    (folder / "dagfactory_loader.py").write_text(
        '"""Airflow DAG file: dag-factory builds one DAG per YAML file in configs/."""\n'
        "from pathlib import Path\n\n"
        "from dagfactory import load_yaml_dags\n\n"
        "_configs = str(Path(__file__).resolve().parent / 'configs')\n"
        "load_yaml_dags(globals_dict=globals(), dags_folder=_configs, defaults_config_path=_configs)\n"
    )
    for i in range(count):
        lines = [
            f"pipe_{i:04d}:",
            "  default_args:",
            "    owner: ml-platform",
            "    retries: 2",
            "  start_date: 2026-11-01",
            '  schedule: "@daily"',
            "  catchup: false",
            f"  description: benchmark pipeline {i}",
            f"  tags: [bench, team-{i % 7}]",
            "  tasks:",
        ]
        previous = None
        for stage in STAGES:
            lines.append(f"    {stage}:")
            lines.append(f"      operator: {BASH}")
            lines.append(f'      bash_command: "{_command(i, stage)}"')
            if stage == "train":
                lines.append("      retries: 1")
            if previous:
                lines.append(f"      dependencies: [{previous}]")
            previous = stage
        (configs / f"pipe_{i:04d}.yml").write_text("\n".join(lines) + "\n")


def write_python(folder: Path, count: int) -> None:
    folder.mkdir(parents=True)
    for i in range(count):
        body = [
            f'"""Benchmark pipeline {i}."""',
            "from datetime import datetime, timezone",
            "",
            "from airflow.providers.standard.operators.bash import BashOperator",
            "from airflow.sdk import DAG",
            "",
            "with DAG(",
            f'    dag_id="pipe_{i:04d}",',
            f'    description="benchmark pipeline {i}",',
            '    schedule="@daily",',
            "    start_date=datetime(2026, 11, 1, tzinfo=timezone.utc),",
            "    catchup=False,",
            f'    tags=["bench", "team-{i % 7}"],',
            '    default_args={"owner": "ml-platform", "retries": 2},',
            "):",
        ]
        for stage in STAGES:
            retries = ", retries=1" if stage == "train" else ""
            body.append(
                f'    {stage} = BashOperator(task_id="{stage}", bash_command="{_command(i, stage)}"{retries})'
            )
        body.append("    " + " >> ".join(STAGES))
        (folder / f"pipe_{i:04d}.py").write_text("\n".join(body) + "\n")


def parse_once(folder: Path, count: int, env: dict[str, str]) -> tuple[float, float]:
    """CPU and wall-clock seconds DagBag took to parse ``folder`` in a fresh interpreter."""
    completed = subprocess.run(
        [sys.executable, "-c", RUNNER, str(folder)], env=env, capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(f"parsing {folder} failed:\n{completed.stderr[-3000:]}")
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    if result["errors"] or result["dags"] != count:
        raise RuntimeError(
            f"{folder}: expected {count} DAGs and no import error, got {result['dags']} DAGs, "
            f"errors {result['errors']}"
        )
    return float(result["cpu"]), float(result["wall"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.dag_parse", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--count", type=int, default=1000, help="pipelines per variant (default 1000)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per variant (>= 2: the first is cold)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="nuro-ml-dag-parse-") as tmp:
        root = Path(tmp)
        base = dict(os.environ)
        base.update(
            AIRFLOW_HOME=str(root / "airflow"),
            NURO_ML_DATA_DIR=str(root / "data"),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            # Timed here, not by Airflow: a busy machine must not turn a slow run into a failure.
            AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT="0",
        )
        # Python DAG files are compiled once, then read from __pycache__, as a DAG processor does.
        base.pop("PYTHONDONTWRITEBYTECODE", None)
        base.pop("NURO_ML_PIPELINE_CACHE_DIR", None)
        (root / "airflow").mkdir()
        folders = {"ours": root / "ours", "dagfactory": root / "dagfactory", "python": root / "python"}
        write_ours(folders["ours"], args.count)
        write_dagfactory(folders["dagfactory"], args.count)
        write_python(folders["python"], args.count)
        runs: dict[str, list[float]] = {name: [] for name in folders}
        for _ in range(max(2, args.repeat)):
            for name, folder in folders.items():
                cpu, wall = parse_once(folder, args.count, base)
                print(f"# {name}: {cpu:.2f} s CPU, {wall:.2f} s wall for {args.count} DAGs", file=sys.stderr)
                if name == "ours" and wall > IMPORT_TIMEOUT:
                    print(
                        f"# ours took longer than Airflow's default {IMPORT_TIMEOUT} s import timeout",
                        file=sys.stderr,
                    )
                runs[name].append(cpu)

    def per_dag(seconds: float) -> float:
        return seconds * 1000 / args.count

    # The first run of ours fills the spec cache and the first Python run writes __pycache__;
    # later runs are the steady state of a DAG processor re-parsing unchanged files.
    ours_warm, ours_cold = per_dag(min(runs["ours"][1:])), per_dag(runs["ours"][0])
    factory, python = per_dag(min(runs["dagfactory"])), per_dag(min(runs["python"][1:]))
    for metric, ours, reference in (
        ("dag_parse_1000", ours_warm, factory),
        ("dag_parse_1000_python", ours_warm, python),
        ("dag_parse_1000_cold", ours_cold, factory),
    ):
        ratio = reference / ours
        print(f"{metric}: ours {ours:.2f} ms/DAG, reference {reference:.2f} ms/DAG, ratio {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
