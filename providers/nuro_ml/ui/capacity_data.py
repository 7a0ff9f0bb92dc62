"""The capacity page's access to the quota ledger: its read model, and quota changes.

The page, its JSON API and ``nuro-ml quota show`` all show
:func:`nuro_ml.capacity.view.capacity_overview`; this module picks the ledger at
``settings.ledger_url()`` (one engine per URL, shared by requests) and applies the changes
admins make on the page.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache

from nuro_ml import settings
from nuro_ml.capacity.ledger import QuotaLedger
from nuro_ml.capacity.policy import PolicyConfig
from nuro_ml.capacity.records import Pool, Quota
from nuro_ml.capacity.view import CapacityOverview, capacity_overview


@cache
def _ledger(url: str) -> QuotaLedger:
    return QuotaLedger(url)


def ledger() -> QuotaLedger:
    """The ledger at ``settings.ledger_url()`` (one engine per URL, shared by requests)."""
    return _ledger(settings.ledger_url())


def overview(
    source: QuotaLedger | None = None,
    *,
    hours: float = 24.0,
    buckets: int = 24,
    now: datetime | None = None,
    policy: PolicyConfig | str = "fair",
) -> CapacityOverview:
    """:func:`~nuro_ml.capacity.view.capacity_overview` of ``source`` or the configured ledger."""
    return capacity_overview(source or ledger(), hours=hours, buckets=buckets, now=now, policy=policy)


def set_quota(
    team: str,
    pool: str,
    *,
    nominal: float,
    borrowing_limit: float | None,
    lending_limit: float | None,
) -> Quota:
    """Create or change a team's quota in a pool (the pool must exist)."""
    return ledger().upsert_quota(
        team, pool, nominal=nominal, borrowing_limit=borrowing_limit, lending_limit=lending_limit
    )


def remove_quota(team: str, pool: str) -> bool:
    """Delete a team's quota in a pool; returns whether there was one."""
    return ledger().remove_quota(team, pool)


def set_pool(name: str, *, capacity: int, gpu_type: str | None) -> Pool:
    """Register a pool or change its capacity."""
    return ledger().upsert_pool(name, capacity=capacity, gpu_type=gpu_type)


def pool_exists(name: str) -> bool:
    return ledger().pool(name) is not None
