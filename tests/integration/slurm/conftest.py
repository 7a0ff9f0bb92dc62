"""Slurm integration tests share one real local cluster for the whole session."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.fixtures.slurm import SlurmCluster, SlurmRestd, cancel_all_jobs, slurm_cluster, slurm_restd

__all__ = ["slurm_cluster", "slurm_restd"]


@pytest.fixture
def slurm(slurm_cluster: SlurmCluster) -> Iterator[SlurmCluster]:
    """The session cluster, left without queued or running jobs after each test."""
    try:
        yield slurm_cluster
    finally:
        cancel_all_jobs(slurm_cluster)


@pytest.fixture
def slurm_conn_id(slurm: SlurmCluster, monkeypatch: pytest.MonkeyPatch) -> str:
    """An Airflow connection of type ``slurm`` pointing at the local cluster."""
    extra = {"slurm_conf": str(slurm.slurm_conf), "partition": slurm.partition}
    monkeypatch.setenv("AIRFLOW_CONN_SLURM_LOCAL", json.dumps({"conn_type": "slurm", "extra": extra}))
    return "slurm_local"


@pytest.fixture
def slurm_rest_conn_id(slurm: SlurmCluster, slurm_restd: SlurmRestd, monkeypatch: pytest.MonkeyPatch) -> str:
    """An Airflow connection of type ``slurm`` reaching the local cluster through slurmrestd."""
    extra = {"rest_url": slurm_restd.url, "partition": slurm.partition}
    monkeypatch.setenv("AIRFLOW_CONN_SLURM_REST", json.dumps({"conn_type": "slurm", "extra": extra}))
    return "slurm_rest"
