"""Two capacity sensors that cannot be admitted yet, each for its own reason.

``over_quota`` asks pool ``reasons-a`` for GPUs its team's quota (no borrowing) has already
handed out; ``pool_short`` asks pool ``reasons-b`` for more GPUs than are free there;
``unreachable`` counts on a Ray cluster at an address where nothing listens. The test that
deploys this DAG sets up the pools, quotas and the leases that hold them. One sensor pokes, the
others wait in the triggerer, so both paths log their reason.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG
from nuro_ml.sensors.gpu_capacity import GpuCapacitySensor

with DAG(dag_id="gpu_wait_reasons", schedule=None, catchup=False, tags=["capacity"]):
    GpuCapacitySensor(
        task_id="over_quota",
        team="reasons-perception",
        pool="reasons-a",
        gpus=2,
        deferrable=False,
        mode="poke",
        poke_interval=2.0,
        timeout=timedelta(minutes=20),
    )
    GpuCapacitySensor(
        task_id="pool_short",
        team="reasons-mapping",
        pool="reasons-b",
        gpus=3,
        deferrable=True,
        poke_interval=2.0,
        timeout=timedelta(minutes=20),
    )
    GpuCapacitySensor(
        task_id="unreachable",
        team="reasons-mapping",
        pool="reasons-c",
        gpus=1,
        # Port 9 (discard) is closed on loopback: every capacity query is refused.
        backend={"type": "ray", "address": "http://127.0.0.1:9", "pool": "reasons-c", "timeout_seconds": 2},
        deferrable=True,
        poke_interval=30.0,
        timeout=timedelta(minutes=20),
    )
