"""Runs the main DAG end to end with `airflow dags test` and checks what a user would.

The run provisions a Ray head through Terraform, generates and converts drive logs,
materializes features, waits for GPUs, trains and tears down; afterwards the data is in
place, the lease is released and nothing of the cluster is left.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pyarrow.dataset as ds
import pytest

from tests.e2e.main_dag_run import DAG_ID, DAY, migrated_env, run_conf, run_main_dag

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]

VEHICLES = ["veh-001", "veh-002"]
DRIVE_SECONDS = 60


@dataclass
class DemoRun:
    env: dict[str, str]
    data_dir: Path
    conf: dict[str, Any]
    outputs: list[subprocess.CompletedProcess[str]]
    lineage_file: Path

    def summary(self) -> dict[str, Any]:
        files = sorted((self.data_dir / "summaries" / DAG_ID).glob("*.json"))
        assert files, f"no run summary written under {self.data_dir / 'summaries'}"
        return dict(json.loads(files[-1].read_text()))


def _table_rows(root: Path, table: str) -> int:
    return int(ds.dataset(root / table, format="parquet", partitioning="hive").count_rows())


def _ray_processes(temp_marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info.get("cmdline") or [])
        if temp_marker in cmd and ("ray" in cmd or "raylet" in cmd or "gcs_server" in cmd):
            found.append(proc)
    return found


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoRun]:
    root = tmp_path_factory.mktemp("e2e")
    data_dir = root / "data"
    lineage_file = root / "openlineage.jsonl"
    env = migrated_env(
        root,
        data_dir,
        # The OpenLineage provider's file transport: one JSON event per line.
        AIRFLOW__OPENLINEAGE__TRANSPORT=json.dumps(
            {"type": "file", "log_file_path": str(lineage_file), "append": True}
        ),
        AIRFLOW__OPENLINEAGE__NAMESPACE="nuro-ml-e2e",
        # Training lineage reads the Feast registry; on two shared cores that can pass the 10 s default.
        AIRFLOW__OPENLINEAGE__EXECUTION_TIMEOUT="60",
    )
    conf = run_conf(VEHICLES, DRIVE_SECONDS, num_boost_round=10)
    result = run_main_dag(env, conf)
    assert result.returncode == 0, (result.stdout + result.stderr)[-8000:]
    yield DemoRun(env, data_dir, conf, [result], lineage_file)


def test_etl_partitions_hold_every_message_once(demo_run: DemoRun) -> None:
    etl_root = demo_run.data_dir / "etl"
    summary = demo_run.summary()
    messages = summary["etl"]["messages"]
    # 100 Hz ego pose for each vehicle's drive: the partition holds exactly the messages logged.
    pose_rows = _table_rows(etl_root, "ego_pose")
    assert pose_rows == int(messages["/ego/pose"]) == len(VEHICLES) * DRIVE_SECONDS * 100
    for vehicle in VEHICLES:
        partition = etl_root / "ego_pose" / f"date={DAY}" / f"vehicle={vehicle}"
        assert any(partition.glob("*.parquet")), f"missing partition {partition}"
    assert _table_rows(etl_root, "scene_stats") == summary["etl"]["rows"]["scene_stats"]


def test_online_features_for_a_known_scene(demo_run: DemoRun) -> None:
    scenes = ds.dataset(
        demo_run.data_dir / "etl" / "scene_stats", format="parquet", partitioning="hive"
    ).to_table()
    scene_id = scenes.column("scene_id")[0].as_py()
    expected_speed = scenes.column("speed_mean_mps")[0].as_py()
    code = (
        "import json, sys\n"
        "from nuro_ml.hooks.feast import FeastHook\n"
        "store = FeastHook().get_conn()\n"
        "resp = store.get_online_features(features=store.get_feature_service('scene_training'),\n"
        f"    entity_rows=[{{'scene_id': {scene_id!r}}}]).to_dict()\n"
        "print(json.dumps(resp, default=str))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=demo_run.env, capture_output=True, text=True, check=True
    )
    features = json.loads(out.stdout.strip().splitlines()[-1])
    assert features["scene_id"] == [scene_id]
    assert features["speed_mean_mps"][0] == pytest.approx(expected_speed)


def test_training_succeeded_and_wrote_the_model(demo_run: DemoRun) -> None:
    training = demo_run.summary()["training"]
    assert training["status"] == "SUCCEEDED"
    artifact = Path(str(training["artifact_uri"]).removeprefix("file://"))
    assert artifact.exists() and artifact.stat().st_size > 0
    metrics = training["metrics"]
    assert 0.0 <= float(metrics["accuracy"]) <= 1.0
    assert int(metrics["train_rows"]) > 0


def test_lease_released_and_cluster_destroyed(demo_run: DemoRun) -> None:
    from nuro_ml.capacity.ledger import QuotaLedger
    from nuro_ml.capacity.records import LeaseState

    ledger = QuotaLedger(f"sqlite:///{demo_run.data_dir / 'ledger.db'}")
    assert ledger.leases(state=LeaseState.ACTIVE) == []
    assert [lease.state for lease in ledger.leases()] == [LeaseState.RELEASED]
    wait = demo_run.summary()["gpu_wait"]
    assert wait["gpus"] == 2
    states = sorted((demo_run.data_dir / "terraform").rglob("*.tfstate"))
    assert states, "no Terraform state written"
    for state_file in states:
        state = json.loads(state_file.read_text())
        assert state["resources"] == [], f"{state_file} still holds resources"
    assert _ray_processes(str(demo_run.conf["dashboard_port"])) == []


def _completed_jobs(run: DemoRun) -> dict[str, dict[str, Any]]:
    assert run.lineage_file.exists(), "the OpenLineage file transport wrote no events"
    events = [json.loads(line) for line in run.lineage_file.read_text().splitlines() if line.strip()]
    return {e["job"]["name"]: e for e in events if e.get("eventType") == "COMPLETE" and "job" in e}


def _rows(dataset: dict[str, Any]) -> int:
    return int(dataset["outputFacets"]["outputStatistics"]["rowCount"])


def test_lineage_graph_connects_drive_logs_tables_features_and_model(demo_run: DemoRun) -> None:
    jobs = _completed_jobs(demo_run)
    summary = demo_run.summary()
    etl, features, train = (jobs[f"{DAG_ID}.{task}"] for task in ("etl", "feast_materialize", "train"))
    etl_root = demo_run.data_dir / "etl"

    # Drive logs -> Parquet tables, with the row counts the run reported.
    [logs] = etl["inputs"]
    assert (logs["namespace"], logs["name"]) == ("file", str((demo_run.data_dir / "raw").resolve()))
    tables = {o["name"]: o for o in etl["outputs"]}
    scene_stats = str((etl_root / "scene_stats").resolve())
    assert _rows(tables[scene_stats]) == summary["etl"]["rows"]["scene_stats"] > 0
    assert _rows(tables[str((etl_root / "ego_pose").resolve())]) == _table_rows(etl_root, "ego_pose")
    assert "scene_id" in {f["name"] for f in tables[scene_stats]["facets"]["schema"]["fields"]}

    # Tables -> feature views (and their online tables), with the rows materialized.
    assert scene_stats in {i["name"] for i in features["inputs"] if i["namespace"] == "file"}
    views = {o["name"]: o for o in features["outputs"] if o["namespace"].startswith("feast://")}
    assert {name: _rows(v) for name, v in views.items()} == summary["features"]["rows"]
    online = [o for o in features["outputs"] if not o["namespace"].startswith("feast://")]
    assert len(online) == len(views)

    # Feature views -> model artifact.
    model = str(Path(str(summary["artifacts"]).removeprefix("file://")))
    trained_on = {i["name"] for i in train["inputs"] if i["namespace"].startswith("feast://")}
    assert trained_on and trained_on <= set(views)
    assert model in {o["name"] for o in train["outputs"]}

    # One connected graph: following job edges from the logs reaches the model.
    edges: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for event in jobs.values():
        for i in event.get("inputs", []):
            for o in event.get("outputs", []):
                edges.setdefault((i["namespace"], i["name"]), set()).add((o["namespace"], o["name"]))
    reached, frontier = set(), [(logs["namespace"], logs["name"])]
    while frontier:
        node = frontier.pop()
        if node not in reached:
            reached.add(node)
            frontier.extend(edges.get(node, ()))
    assert ("file", model) in reached
    assert train["run"]["facets"]["externalQuery"]["source"] == "ray"
