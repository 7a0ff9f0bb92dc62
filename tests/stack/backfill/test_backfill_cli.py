"""On-call backfills a daily ETL + feature pipeline with ``airflow backfill create``, twice.

The real scheduler (LocalExecutor) and triggerer run the backfill's runs. The first backfill
converts three days of drive logs and materializes their features; the second one reprocesses
the same, completed days. A user checks that each day has exactly one output partition, that
reprocessing left the same rows (never duplicated), and that nothing was computed twice: the
logs did not change, so the second ETL leaves each partition as it was and every feature
computation of the second materialization is a cache hit.

The pipeline is deployed the way a platform deploys one: the feature repository is applied once
(runs only materialize), and each day holds one short drive, so a run's cost is what the test is
about: one Spark ETL and one materialization per interval.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from nuro_ml.etl.generator import generate_interval
from nuro_ml.etl.job import TABLES

from tests.fixtures.airflow_stack import AirflowStack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

SPEC = Path(__file__).resolve().parent / "pipelines" / "scene_features_daily.yaml"
DAG_ID = "scene_features_daily"
#: Backfill range (logical dates, inclusive). Each run processes the day before its date.
FROM_DATE = date(2026, 1, 10)
TO_DATE = date(2026, 1, 12)
DAYS = [FROM_DATE - timedelta(days=1) + timedelta(days=i) for i in range((TO_DATE - FROM_DATE).days + 1)]
VEHICLE = "veh-001"
BACKFILL_TIMEOUT = 900.0
APPLY_FEATURE_REPO = "from nuro_ml.hooks.feast import FeastHook; FeastHook(None).apply()"


def _run_id(logical: date) -> str:
    return f"backfill__{logical.isoformat()}T00:00:00+00:00"


RUN_IDS = [_run_id(day + timedelta(days=1)) for day in DAYS]


def backfill(stack: AirflowStack, *extra: str) -> dict[str, Any]:
    """``airflow backfill create`` for the range; waits until the scheduler completed it."""
    known = {b["id"] for b in stack.get_json("/api/v2/backfills", params={"dag_id": DAG_ID})["backfills"]}
    created = stack.cli(
        "backfill",
        "create",
        "--dag-id",
        DAG_ID,
        "--from-date",
        FROM_DATE.isoformat(),
        "--to-date",
        TO_DATE.isoformat(),
        *extra,
    )
    assert created.returncode == 0, (created.stdout + created.stderr)[-3000:]
    deadline = time.monotonic() + BACKFILL_TIMEOUT
    while True:
        backfills = stack.get_json("/api/v2/backfills", params={"dag_id": DAG_ID})["backfills"]
        new = [b for b in backfills if b["id"] not in known]
        assert len(new) <= 1, new
        if new and new[0]["completed_at"]:
            return dict(new[0])
        if time.monotonic() > deadline:
            states = {run_id: stack.task_states(DAG_ID, run_id) for run_id in RUN_IDS}
            raise AssertionError(f"backfill {new} not completed after {BACKFILL_TIMEOUT:.0f} s: {states}")
        stack.check_alive()
        time.sleep(2.0)


def data_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*.parquet") if not p.name.startswith((".", "_")))


def partitions(etl_root: Path, table: str) -> list[str]:
    """``date=.../vehicle=...`` directories of a table that hold data."""
    root = etl_root / table
    return sorted(str(p.relative_to(root)) for p in root.glob("date=*/vehicle=*") if data_files(p))


def row_counts(etl_root: Path) -> dict[str, dict[str, int]]:
    """Rows per table and partition, from the Parquet footers."""
    return {
        table: {
            part: sum(pq.ParquetFile(f).metadata.num_rows for f in data_files(etl_root / table / part))
            for part in partitions(etl_root, table)
        }
        for table in TABLES
    }


def materialize_results(stack: AirflowStack) -> dict[str, dict[str, Any]]:
    return {run_id: stack.xcom(DAG_ID, run_id, "feast_materialize") for run_id in RUN_IDS}


def apply_feature_repo(stack: AirflowStack) -> None:
    """Apply the repository's feature definitions to the stack's Feast registry (embedded defaults)."""
    applied = subprocess.run(
        [sys.executable, "-c", APPLY_FEATURE_REPO],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert applied.returncode == 0, (applied.stdout + applied.stderr)[-3000:]


@pytest.fixture(scope="module")
def deployed(airflow_stack: AirflowStack) -> Iterator[AirflowStack]:
    """One 10 s drive of one vehicle per day has landed; features and the daily pipeline are deployed."""
    generate_interval(
        airflow_stack.data_dir / "raw",
        DAYS,
        [VEHICLE],
        drive_seconds=10,
        seed=20260109,
        lidar_points=512,
        image_bytes=2048,
    )
    apply_feature_repo(airflow_stack)
    airflow_stack.add_pipeline_specs([SPEC])
    airflow_stack.wait_for_dags([DAG_ID])
    yield airflow_stack


def test_backfill_twice_replaces_partitions_and_reuses_features(deployed: AirflowStack) -> None:
    stack = deployed
    etl_root = stack.data_dir / "etl"
    expected_partitions = [f"date={day.isoformat()}/vehicle={VEHICLE}" for day in DAYS]

    first = backfill(stack)
    assert first["reprocess_behavior"] == "none"
    runs = {r["dag_run_id"]: r for r in stack.get_json(f"/api/v2/dags/{DAG_ID}/dagRuns")["dag_runs"]}
    assert sorted(runs) == sorted(RUN_IDS)
    assert {run_id: runs[run_id]["state"] for run_id in RUN_IDS} == dict.fromkeys(RUN_IDS, "success"), (
        stack.failed_task_logs(DAG_ID, RUN_IDS)
    )
    assert {r["run_type"] for r in runs.values()} == {"backfill"}

    # Each run converted exactly its own day.
    for day, run_id in zip(DAYS, RUN_IDS, strict=True):
        etl = stack.xcom(DAG_ID, run_id, "etl")
        assert etl["partitions"] == [f"date={day.isoformat()}/vehicle={VEHICLE}"], run_id
        assert etl["files"] == 1 and etl["quarantined"] == []
    for table in TABLES:
        assert partitions(etl_root, table) == expected_partitions, table
    counts = row_counts(etl_root)
    assert all(rows > 0 for per_table in counts.values() for rows in per_table.values()), counts
    scenes = ds.dataset(etl_root / "scene_stats", format="parquet", partitioning="hive").to_table()
    assert len(pc.unique(scenes["scene_id"])) == scenes.num_rows

    first_features = materialize_results(stack)
    for run_id, result in first_features.items():
        assert result["cache_misses"] > 0 and result["cache_hits"] == 0, (run_id, result)
        assert (
            result["rows"]["scene_ego_motion"]
            == counts["scene_stats"][expected_partitions[RUN_IDS.index(run_id)]]
        )

    second = backfill(stack, "--reprocess-behavior", "completed")
    assert second["reprocess_behavior"] == "completed"
    runs = {r["dag_run_id"]: r for r in stack.get_json(f"/api/v2/dags/{DAG_ID}/dagRuns")["dag_runs"]}
    assert sorted(runs) == sorted(RUN_IDS), "reprocessing must reuse the runs, not add new ones"
    assert {run_id: runs[run_id]["state"] for run_id in RUN_IDS} == dict.fromkeys(RUN_IDS, "success"), (
        stack.failed_task_logs(DAG_ID, RUN_IDS)
    )
    for run_id in RUN_IDS:
        tis = stack.task_instances(DAG_ID, run_id)
        tries = {ti["task_id"]: (ti["state"], ti["try_number"]) for ti in tis}
        assert tries == {"etl": ("success", 2), "feast_materialize": ("success", 2)}, run_id

    for table in TABLES:
        assert partitions(etl_root, table) == expected_partitions, table
    assert row_counts(etl_root) == counts
    scenes = ds.dataset(etl_root / "scene_stats", format="parquet", partitioning="hive").to_table()
    assert len(pc.unique(scenes["scene_id"])) == scenes.num_rows

    # The logs did not change: the ETL left every partition as it was, so every feature
    # computation of the second pass is a cache hit and nothing is written twice.
    for day, run_id in zip(DAYS, RUN_IDS, strict=True):
        etl = stack.xcom(DAG_ID, run_id, "etl")
        partition = f"date={day.isoformat()}/vehicle={VEHICLE}"
        assert etl["up_to_date"] == etl["partitions"] == [partition], run_id
    second_features = materialize_results(stack)
    for run_id, result in second_features.items():
        first_result = first_features[run_id]
        assert (result["cache_hits"], result["cache_misses"]) == (first_result["cache_misses"], 0), (
            run_id,
            result,
        )
        assert sum(result["rows"].values()) == 0, (run_id, result)
