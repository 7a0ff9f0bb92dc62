from __future__ import annotations

import uuid

import pytest

from tests.fixtures.ray_cluster import ray_cluster  # noqa: F401
from tests.fixtures.services import PostgresServer


@pytest.fixture(scope="module")
def pg_ledger_url(postgres: PostgresServer) -> str:
    """A fresh PostgreSQL database for one test module's ledger."""
    return postgres.create_database(f"ledger_{uuid.uuid4().hex[:12]}")
