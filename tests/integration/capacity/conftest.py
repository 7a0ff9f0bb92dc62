from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.fixtures.ray_cluster import RayCluster, start_ray_cluster, stop_ray_cluster
from tests.fixtures.services import PostgresServer

#: One head node with 4 logical GPUs: the capacity tests need GPU counts, not several nodes.
HEAD_GPUS = 4


@pytest.fixture(scope="module")
def pg_ledger_url(postgres: PostgresServer) -> str:
    """A fresh PostgreSQL database for one test module's ledger."""
    return postgres.create_database(f"ledger_{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="module")
def ray_head() -> Iterator[RayCluster]:
    """``ray start --head --num-gpus=4`` on free ports with its own temp dir, stopped by process group."""
    cluster = start_ray_cluster(workers=0, head_cpus=2, head_gpus=HEAD_GPUS)
    try:
        yield cluster
    finally:
        stop_ray_cluster(cluster)
