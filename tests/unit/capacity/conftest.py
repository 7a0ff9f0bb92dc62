from __future__ import annotations

from pathlib import Path

import pytest
from nuro_ml.capacity.ledger import QuotaLedger

from tests.unit.capacity.stubs import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
def local_ledger(ledger_url: str) -> QuotaLedger:
    """Pool ``local`` with 4 GPUs; perception and planning 2 each, borrowing allowed."""
    ledger = QuotaLedger(ledger_url)
    ledger.upsert_pool("local", capacity=4)
    ledger.upsert_quota("perception", "local", nominal=2)
    ledger.upsert_quota("planning", "local", nominal=2)
    return ledger
