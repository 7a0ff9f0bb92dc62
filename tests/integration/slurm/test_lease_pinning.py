"""A Slurm job launched under a GPU lease asks slurmctld for the lease's node and GPUs."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from airflow.sdk.exceptions import TaskDeferred
from nuro_ml.capacity.backends import load_backend
from nuro_ml.capacity.ledger import QuotaLedger
from nuro_ml.capacity.records import LeaseRequest
from nuro_ml.operators.slurm import XCOM_JOB_ID, SlurmJobOperator

from tests.fixtures.slurm import SlurmCluster

pytestmark = pytest.mark.integration


@dataclass
class LeaseHolderTask:
    """A task instance whose upstream GPU-capacity sensor pushed ``lease``."""

    lease: dict
    dag_id: str = "slurm_pin"
    run_id: str = field(default_factory=lambda: f"manual__{uuid.uuid4().hex[:8]}")
    task_id: str = "train"
    map_index: int = -1
    try_number: int = 1
    xcoms: dict = field(default_factory=dict)

    def xcom_push(self, key: str, value: object) -> None:
        self.xcoms[key] = value

    def xcom_pull(self, task_ids: str, key: str) -> object:
        assert (task_ids, key) == ("wait_for_gpus", "lease")
        return self.lease


def test_job_is_submitted_to_the_lease_node_with_its_gpus(slurm: SlurmCluster, slurm_conn_id, tmp_path: Path):
    backend = load_backend({"type": "slurm", "slurm_conf": str(slurm.slurm_conf)})
    (observed,) = backend.get_capacity()
    assert [n.free_gpus for n in observed.nodes] == [observed.total_gpus]
    ledger = QuotaLedger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.upsert_pool(observed.pool, capacity=observed.total_gpus)
    ledger.upsert_quota("perception", observed.pool, nominal=observed.total_gpus)
    lease = ledger.try_acquire(LeaseRequest(key="k", team="perception", pool=observed.pool, gpus=2), observed)
    assert lease is not None and lease.node_names == (observed.nodes[0].name,)
    xcom = {
        "lease_id": lease.lease_id,
        "gpus": lease.gpus,
        "nodes": lease.nodes,
        "node_names": list(lease.node_names),
        "shares": [[s.node, s.gpu, s.milli] for s in lease.shares],
    }
    ti = LeaseHolderTask(xcom)
    op = SlurmJobOperator(
        task_id="train",
        slurm_conn_id=slurm_conn_id,
        working_directory=str(tmp_path),
        script="sleep 60\n",
        lease_task_id="wait_for_gpus",
        deferrable=True,
    )
    with pytest.raises(TaskDeferred):
        op.execute({"ti": ti, "task_instance": ti, "run_id": ti.run_id})
    job = slurm.run("scontrol", "show", "job", str(ti.xcoms[XCOM_JOB_ID]))
    # slurmctld's own record of the request: the lease's node, and 2 GPUs on it.
    assert re.search(rf"ReqNodeList={re.escape(lease.node_names[0])}\b", job), job
    assert re.search(r"gres/gpu[:=]2|gres:gpu:2|gpu:2", job), job
