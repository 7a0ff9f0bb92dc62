"""Production layout: SQL registry and computation cache on PostgreSQL, Redis online store."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import redis
from nuro_ml.hooks.feast import FeastHook

from tests.fixtures.services import PostgresServer, RedisServer
from tests.unit.features.scene_data import DAY0, days, utc, write_days

pytestmark = pytest.mark.integration


def test_two_workers_share_registry_cache_and_online_store(
    data_dir: Path, postgres: PostgresServer, redis_server: RedisServer
) -> None:
    db = f"feast_{uuid.uuid4().hex[:8]}"
    url = postgres.create_database(db)
    client = redis.Redis(host=redis_server.host, port=redis_server.port, db=10)
    client.flushdb()
    conn = f"{redis_server.connection_string},db=10"
    write_days(2, scenes=3)

    def worker() -> FeastHook:
        return FeastHook(
            feast_conn_id=None,
            online_store="redis",
            redis_connection_string=conn,
            registry_url=url,
            cache_url=url,
        )

    first, second = worker(), worker()
    try:
        assert "feature_view:scene_ego_motion" in first.apply().added
        assert second.apply().added == []  # the other worker sees the same registry
        done = first.materialize(start=utc(DAY0), end=utc(days(3)[-1])).to_xcom()
        assert done["cache_misses"] == 8
        repeat = second.materialize(start=utc(DAY0), end=utc(days(3)[-1])).to_xcom()
        assert (repeat["cache_hits"], repeat["cache_misses"]) == (8, 0)
        values = second.store.get_online_features(
            features=["scene_gnss_quality:gnss_fix_ratio"],
            entity_rows=[{"scene_id": "veh01_d2026030200_0002"}],
        ).to_dict()
        assert values["gnss_fix_ratio"][0] is not None
    finally:
        first.close()
        second.close()
        client.flushdb()
        client.close()
