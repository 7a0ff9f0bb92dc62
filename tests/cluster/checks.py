"""What the cluster tests check after a run: ETL rows, online features, the ledger, secrets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow.compute as pc
import pyarrow.dataset as ds
from nuro_ml.capacity.ledger import QuotaLedger
from nuro_ml.capacity.records import LeaseState, lease_key
from nuro_ml.task_key import TaskKey

from tests.cluster.conftest import DAG_ID, DAY, DRIVE_SECONDS, VEHICLE, Cluster

#: Ego pose is logged at 100 Hz: one row per message, each exactly once.
POSE_RATE_HZ = 100


def etl_table(cluster: Cluster, table: str, day: str = DAY) -> Any:
    root = cluster.data_dir / "etl" / table
    return ds.dataset(root, format="parquet", partitioning="hive").to_table(
        filter=(pc.field("date") == day) & (pc.field("vehicle") == VEHICLE)
    )


def check_etl_rows(cluster: Cluster, day: str = DAY, drive_seconds: int = DRIVE_SECONDS) -> int:
    """The interval's ego-pose partition holds every message once; returns rows checked."""
    pose = etl_table(cluster, "ego_pose", day)
    assert pose.num_rows == drive_seconds * POSE_RATE_HZ
    keys = (
        pc.binary_join_element_wise(
            pc.cast(pose.column("log_time_ns"), "string"), pose.column("drive_id"), "|"
        )
        if "drive_id" in pose.column_names
        else pc.cast(pose.column("log_time_ns"), "string")
    )
    assert len(pc.unique(keys)) == pose.num_rows, "duplicate ego_pose rows"
    scenes = etl_table(cluster, "scene_stats", day)
    assert scenes.num_rows > 0
    assert len(pc.unique(scenes.column("scene_id"))) == scenes.num_rows, "duplicate scenes"
    cluster.figures.rows_checked += pose.num_rows + scenes.num_rows
    return int(pose.num_rows + scenes.num_rows)


def check_online_features(cluster: Cluster, day: str = DAY) -> None:
    """Every scene of the interval is in the Redis online store with the ETL's value."""
    from nuro_ml.hooks.feast import FeastHook

    st = cluster.state
    hook = FeastHook(
        None,
        online_store="redis",
        redis_connection_string=st["env"]["NURO_ML_FEAST_REDIS_CONNECTION_STRING"],
        registry_url=st["env"]["NURO_ML_FEAST_REGISTRY_URL"],
        cache_url=st["env"]["NURO_ML_FEAST_CACHE_URL"],
    )
    store = hook.get_conn()
    scenes = etl_table(cluster, "scene_stats", day)
    ids = scenes.column("scene_id").to_pylist()
    online = store.get_online_features(
        features=["scene_ego_motion:speed_mean_mps"], entity_rows=[{"scene_id": s} for s in ids]
    ).to_dict()
    expected = dict(zip(ids, scenes.column("speed_mean_mps").to_pylist(), strict=True))
    got = dict(zip(online["scene_id"], online["speed_mean_mps"], strict=True))
    assert got.keys() == expected.keys()
    for scene_id, value in expected.items():
        assert got[scene_id] is not None and abs(got[scene_id] - value) < 1e-6, scene_id
    cluster.figures.rows_checked += len(ids)


def check_leases(cluster: Cluster, run_id: str, gpus: int = 2) -> None:
    """The run took exactly one lease, of the GPUs asked for, and released it; nothing is left active."""
    ledger = QuotaLedger(cluster.ledger_url)
    key = lease_key(TaskKey(DAG_ID, run_id, "wait_for_gpus", -1))
    mine = [lease for lease in ledger.leases() if lease.key == key]
    assert len(mine) == 1, f"run {run_id} holds {len(mine)} leases: {mine}"
    assert mine[0].state == LeaseState.RELEASED
    assert mine[0].gpus == gpus
    assert ledger.leases(state=LeaseState.ACTIVE) == []
    cluster.figures.leases_audited += len(ledger.leases())


def check_no_secret_leaked(cluster: Cluster, run_id: str) -> int:
    """No secret in any task log file, XCom value or rendered template field; returns files read."""
    secrets = cluster.secrets()
    logs = sorted(p for p in cluster.task_logs.rglob("*") if p.is_file())
    assert logs, f"no task logs under {cluster.task_logs}"
    for path in logs:
        text = path.read_text(errors="replace")
        for name, secret in secrets.items():
            assert secret not in text, f"{name} password in {path}"
    run = quote(run_id, safe="")
    for task_id, ti in cluster.api.task_instances(DAG_ID, run_id).items():
        rendered = json.dumps(ti.get("rendered_fields"), default=str)
        entries = cluster.api.get_json(
            f"/api/v2/dags/{DAG_ID}/dagRuns/{run}/taskInstances/{task_id}/xcomEntries"
        )
        values = [
            cluster.api.xcom(DAG_ID, run_id, task_id, entry["key"]) for entry in entries["xcom_entries"]
        ]
        dumped = json.dumps(values, default=str)
        for name, secret in secrets.items():
            assert secret not in rendered, f"{name} password in rendered fields of {task_id}"
            assert secret not in dumped, f"{name} password in XCom of {task_id}"
    return len(logs)


def task_log(cluster: Cluster, run_id: str, task_id: str, attempt: int) -> Path:
    return (
        cluster.task_logs
        / f"dag_id={DAG_ID}"
        / f"run_id={run_id}"
        / f"task_id={task_id}"
        / f"attempt={attempt}.log"
    )
