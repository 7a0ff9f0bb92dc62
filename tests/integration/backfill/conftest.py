"""Backfill tests run against a real Airflow stack of their own (see tests/fixtures/airflow_stack.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.airflow_stack import AirflowStack, running_stack
from tests.fixtures.services import PostgresServer


@pytest.fixture(scope="package")
def airflow_stack(request: pytest.FixtureRequest, postgres: PostgresServer) -> Iterator[AirflowStack]:
    """The real Airflow stack, stopped once the backfill tests are done."""
    with running_stack(request, postgres) as stack:
        yield stack
