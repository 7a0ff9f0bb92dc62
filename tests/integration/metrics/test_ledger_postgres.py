"""The scrape-time collector's SQL on PostgreSQL: the same checks as on SQLite."""

from __future__ import annotations

import uuid

import pytest
from nuro_ml.capacity.ledger import QuotaLedger

from tests.unit.metrics import test_ledger_collector as on_sqlite


@pytest.fixture
def ledger(postgres) -> tuple[QuotaLedger, on_sqlite.Clock]:
    url = postgres.create_database(f"metrics_{uuid.uuid4().hex[:8]}")
    clock = on_sqlite.Clock()
    ledger = QuotaLedger(url, clock=clock)
    ledger.upsert_pool("a100", capacity=8, gpu_type="A100")
    ledger.upsert_quota("perception", "a100", nominal=4, borrowing_limit=0)
    ledger.upsert_quota("planning", "a100", nominal=4)
    return ledger, clock


def test_scrape_on_postgres(ledger) -> None:
    on_sqlite.test_scrape_reports_queue_reasons_leases_wait_histogram_and_cost(ledger)


def test_lease_past_expiry_on_postgres(ledger) -> None:
    on_sqlite.test_lease_past_expiry_is_reported_until_reclaimed(ledger)
