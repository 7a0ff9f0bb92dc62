"""Backfill tests run against the session's real Airflow stack (see tests/fixtures/airflow_stack.py)."""

from __future__ import annotations

import pytest

from tests.fixtures import airflow_stack as stack_plugin


def pytest_configure(config: pytest.Config) -> None:
    stack_plugin.register(config)
