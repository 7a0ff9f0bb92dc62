"""The ``feast init -t ray`` repository against stock Feast on its Ray offline store and engine.

On demand (``make cluster-test``): stock Feast starts a local Ray instance for its engine, which
takes most of a minute on a loaded 2-core machine. Ours reads the template's Parquet files with
Arrow (its ``RaySource`` views take the partitioned path); the online values must be equal.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.features.feast_repos import copy_project, feast_init, stock_online_features
from tests.integration.features.test_user_repositories import LOOKBACK, _interval, _ours

pytestmark = pytest.mark.cluster

ROWS = [{"driver_id": d, "customer_id": c} for d, c in zip(range(1001, 1006), range(2001, 2006), strict=True)]


def test_ray_template_online_values_equal_stock_feasts(tmp_path: Path) -> None:
    repo = feast_init(tmp_path / "ours", "drivers", "ray")
    stock_repo = copy_project(repo, tmp_path / "stock" / "drivers")
    start, end = _interval()
    try:
        ours = _ours(repo, None, start, end, ROWS)
        stock = stock_online_features(stock_repo, start - LOOKBACK, end, ROWS)
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    assert {p["path"] for p in ours["paths"].values()} == {"partitioned"}
    assert ours["_online"] == stock
    assert all(any(v is not None for v in values) for values in stock.values())
