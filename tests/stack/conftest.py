"""Tests against one real Airflow stack (api-server, dag-processor, scheduler, triggerer).

The stack is package-scoped: it starts for the first test here and stops after the last, so the
browser and backfill tests share it and its daemons do not compete with the tests that follow.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.airflow_stack import AirflowStack, running_stack
from tests.fixtures.services import PostgresServer


@pytest.fixture(scope="package")
def airflow_stack(request: pytest.FixtureRequest, postgres: PostgresServer) -> Iterator[AirflowStack]:
    """The running stack; see tests/fixtures/airflow_stack.py."""
    with running_stack(request, postgres) as stack:
        yield stack
