"""QuotaLedger keeps its public methods and their parameters, whatever module implements them."""

from __future__ import annotations

import inspect

from nuro_ml.capacity.ledger import QuotaLedger, lease_key
from nuro_ml.task_key import TaskKey

#: Public methods of QuotaLedger and their parameters (names and kinds), as callers use them.
API: dict[str, tuple[str, ...]] = {
    "migrate": (),
    "schema_version": (),
    "now": (),
    "upsert_pool": ("name", "*capacity", "*gpu_type"),
    "upsert_quota": ("team", "pool", "*nominal", "*borrowing_limit", "*lending_limit"),
    "remove_quota": ("team", "pool"),
    "pools": (),
    "pool": ("name",),
    "quotas": ("pool",),
    "set_nodes": ("pool", "nodes"),
    "nodes": ("pool",),
    "node_usage": ("pool",),
    "enqueue": ("request",),
    "touch": ("keys",),
    "withdraw": ("key", "*state"),
    "waiting_request": ("key",),
    "record_wait_reasons": ("records",),
    "requests": ("*state", "*pool", "*key"),
    "abandon_stale": (),
    "try_acquire": ("request", "observed"),
    "acquire": ("request",),
    "release": ("lease_id",),
    "release_key": ("key",),
    "heartbeat": ("lease_id", "*ttl_seconds"),
    "request_reclaim": ("lease_ids", "*grace_seconds"),
    "expire_leases": (),
    "lease": ("lease_id",),
    "active_lease": ("key",),
    "leases": ("*state", "*pool", "*team", "*since"),
    "snapshot": ("observed",),
}


def _parameters(method: object) -> tuple[str, ...]:
    signature = inspect.signature(method)  # type: ignore[arg-type]
    return tuple(
        ("*" if p.kind is inspect.Parameter.KEYWORD_ONLY else "") + name
        for name, p in signature.parameters.items()
        if name != "self"
    )


def test_public_methods_keep_their_parameters() -> None:
    found = {name: _parameters(getattr(QuotaLedger, name)) for name in API if hasattr(QuotaLedger, name)}
    assert found == API


def test_public_attributes_and_module_exports(ledger_url: str) -> None:
    ledger = QuotaLedger(ledger_url, placement="best-fit")
    assert (ledger.url, ledger.placement, ledger.dialect) == (ledger_url, "best-fit", "sqlite")
    assert ledger.safe_url == ledger_url and repr(ledger) == f"QuotaLedger({ledger_url!r})"
    assert ledger.engine is ledger.engine
    assert lease_key(TaskKey("dag", "run", "task")) == "dag/run/task/-1"
