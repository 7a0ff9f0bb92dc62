"""Node-aware admission on a real two-node Ray cluster, and a job launched under the lease."""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from nuro_ml.capacity.backends import load_backend
from nuro_ml.capacity.backends.base import PoolCapacity
from nuro_ml.capacity.ledger import QuotaLedger
from nuro_ml.capacity.records import LeaseRequest
from nuro_ml.operators.ray import RayJobOperator
from ray.job_submission import JobSubmissionClient

from tests.fixtures.ray_cluster import RayCluster, ray_cluster  # noqa: F401
from tests.polling import wait_for
from tests.unit.ray.stubs import TaskInstanceStub

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


@dataclass
class LeaseTaskInstance(TaskInstanceStub):
    lease: dict[str, Any] | None = None

    def xcom_pull(self, task_ids: str, key: str) -> Any:
        assert (task_ids, key) == ("wait_for_gpus", "lease")
        return self.lease


def test_two_gpu_gang_waits_for_one_node_and_its_job_runs_there(
    ray_cluster: RayCluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    backend = load_backend({"type": "ray", "address": ray_cluster.gcs_address, "pool": "local"})

    def capacity() -> PoolCapacity:
        (pool,) = backend.get_capacity()
        return pool

    nodes = capacity().nodes
    assert [n.total_gpus for n in nodes] == [2, 2]
    ids = [n.name for n in nodes]
    client = JobSubmissionClient(ray_cluster.dashboard_url)
    # One GPU held on each node: 2 of 4 GPUs free, split 1 + 1.
    holders = [
        client.submit_job(
            entrypoint="sleep 600",
            entrypoint_num_gpus=1,
            entrypoint_label_selector={"ray.io/node-id": node_id},
        )
        for node_id in ids
    ]
    try:
        wait_for(
            lambda: [n.free_gpus for n in capacity().nodes] == [1, 1], "one GPU held per node", interval=0.5
        )
        ledger = QuotaLedger(f"sqlite:///{tmp_path / 'ledger.db'}")
        ledger.upsert_pool("local", capacity=4)
        ledger.upsert_quota("perception", "local", nominal=4)
        gang = LeaseRequest(key="ray-nodes/run/train/-1", team="perception", pool="local", gpus=2, nodes=1)
        assert ledger.try_acquire(gang, capacity()) is None  # 2 free GPUs, but on two nodes

        client.stop_job(holders[1])
        wait_for(
            lambda: {n.name: n.free_gpus for n in capacity().nodes}[ids[1]] == 2, "a node freed", interval=0.5
        )
        lease = ledger.try_acquire(gang, capacity())
        assert lease is not None and lease.node_names == (ids[1],)

        ti = LeaseTaskInstance(
            dag_id="ray_nodes",
            run_id="it__lease",
            task_id="train",
            lease={
                "lease_id": lease.lease_id,
                "gpus": lease.gpus,
                "node_names": list(lease.node_names),
                "shares": [[s.node, s.gpu, s.milli] for s in lease.shares],
            },
        )
        code = "import os; print('lease nodes', os.environ['NURO_ML_LEASE_NODES'])"
        op = RayJobOperator(
            task_id="train",
            address=ray_cluster.dashboard_url,
            ray_conn_id=None,
            entrypoint=f"{shlex.quote(sys.executable)} -u -c {shlex.quote(code)}",
            poll_interval=0.5,
            deferrable=False,
            lease_task_id="wait_for_gpus",
        )
        op.execute({"ti": ti})
        submission_id = ti.xcom["ray_submission_id"]
        assert client.get_job_info(submission_id).driver_node_id == ids[1]
        assert f"lease nodes {ids[1]}" in client.get_job_logs(submission_id)
    finally:
        for holder in holders:
            client.stop_job(holder)
