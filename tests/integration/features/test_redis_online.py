"""Redis online store: the Arrow fast paths against Feast's own code, on a real Redis server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from nuro_ml.exceptions import FeatureStoreError
from nuro_ml.features.materialize import Materializer
from nuro_ml.features.redis_decode import VECTOR_MIN
from nuro_ml.features.resp import RedisEndpoint
from nuro_ml.features.writers import RedisArrowWriter
from nuro_ml.hooks.feast import FeastHook

from tests.fixtures.services import RedisServer
from tests.unit.features.scene_data import DAY0, days, read_source, utc, write_days, write_live_state

pytestmark = pytest.mark.integration

DB = 9  # a database of its own on the shared session server


@pytest.fixture
def redis_db(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis(host=redis_server.host, port=redis_server.port, db=DB)
    client.flushdb()
    yield client
    client.execute_command("CLIENT", "UNPAUSE")
    client.flushdb()
    client.close()


@pytest.fixture
def redis_hook(data_dir: Path, redis_server: RedisServer, redis_db: redis.Redis) -> Iterator[FeastHook]:
    hook = FeastHook(
        feast_conn_id=None,
        online_store="redis",
        redis_connection_string=f"{redis_server.connection_string},db={DB}",
    )
    yield hook
    hook.close()


def _dump(client: redis.Redis) -> dict[bytes, dict[bytes, bytes]]:
    return {k: client.hgetall(k) for k in client.scan_iter(count=1000)}


def test_fast_write_is_byte_identical_to_feast_and_both_readers_agree(
    redis_hook: FeastHook, redis_db: redis.Redis
) -> None:
    write_days(2, scenes=5)
    write_live_state(2)
    redis_hook.apply()
    start, end = utc(DAY0), utc(days(3)[-1])
    report = redis_hook.materialize(start=start, end=end).to_xcom()
    assert report["rows"]["scene_ego_motion"] == 20
    assert report["rows"]["vehicle_live_state"] == 4  # the latest per vehicle on each of two days
    ours = _dump(redis_db)

    scene_ids = [*read_source().column("scene_id").to_pylist()[::3], "unknown_scene"]
    store = redis_hook.store
    sdk = store.get_online_features(
        features=store.get_feature_service("scene_training"), entity_rows=[{"scene_id": s} for s in scene_ids]
    ).to_dict()
    reader = redis_hook.online_reader()
    fast = reader.get_online_features(
        features="scene_training", entity_rows=[{"scene_id": s} for s in scene_ids]
    )
    assert fast == sdk
    assert sdk["speed_mean_mps"][-1] is None
    refs = ["vehicle_last_scene:last_speed_mean_mps", "scene_lidar_density:camera_frames"]
    rows = {"vehicle_id": ["veh02", "veh01"], "scene_id": scene_ids[:2]}
    assert reader.get_online_features(features=refs, entity_rows=rows, full_feature_names=True) == (
        store.get_online_features(features=refs, entity_rows=rows, full_feature_names=True).to_dict()
    )
    # Enough entities for whole-column decoding: all present, then with unknown ones among them.
    service = store.get_feature_service("scene_training")
    every = read_source().column("scene_id").to_pylist()[::-1]
    assert len(every) >= VECTOR_MIN
    for ids in (every, [*every[:7], "unknown_a", *every[7:], "unknown_b"]):
        entity_rows = [{"scene_id": s} for s in ids]
        expected = store.get_online_features(features=service, entity_rows=entity_rows).to_dict()
        assert reader.get_online_features(features="scene_training", entity_rows=entity_rows) == expected
        columns = {"scene_id": ids}
        assert reader.get_online_features(features="scene_training", entity_rows=columns) == expected
    assert expected["camera_frames"][7] is None and isinstance(expected["camera_frames"][0], int)
    reader.close()

    redis_db.flushdb()
    store.materialize(start, end)  # stock Feast into the same database
    assert _dump(redis_db) == ours


def test_writes_survive_a_stalled_server_without_duplicates(
    redis_hook: FeastHook, redis_db: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    write_days(2, scenes=40)
    redis_hook.apply()
    cfg = redis_hook.resolved
    writer = RedisArrowWriter(
        RedisEndpoint.from_feast(cfg.redis_connection_string),
        project=cfg.project,
        batch_rows=25,
        max_attempts=8,
        backoff_s=0.05,
        socket_timeout=0.3,
    )
    # Redis holds every write command for 1.5 s: the first batches time out and are resent.
    redis_db.execute_command("CLIENT", "PAUSE", "1500", "WRITE")
    try:
        report = Materializer(
            redis_hook.store, writer=writer, target=cfg.online_target(), cache=redis_hook.cache
        ).run(utc(DAY0), utc(days(3)[-1]))
    finally:
        writer.close()
    assert sum(v.retries for v in report.views.values()) >= 1
    assert "retrying" in caplog.text
    assert report.to_xcom()["rows"]["scene_ego_motion"] == 160

    assert len(list(redis_db.scan_iter(count=1000))) == 160 + 2  # one hash per scene and per vehicle
    scene_ids = read_source().column("scene_id").to_pylist()
    store = redis_hook.store
    sdk = store.get_online_features(
        features=store.get_feature_service("scene_training"), entity_rows=[{"scene_id": s} for s in scene_ids]
    ).to_dict()
    source = read_source().to_pydict()
    assert sdk["speed_mean_mps"] == source["speed_mean_mps"]
    assert sdk["camera_frames"] == source["camera_frames"]


def test_exhausted_retry_budget_is_a_clear_error_and_caches_nothing(
    redis_hook: FeastHook, redis_db: redis.Redis
) -> None:
    write_days(1, scenes=4)
    redis_hook.apply()
    cfg = redis_hook.resolved
    endpoint = RedisEndpoint.from_feast(cfg.redis_connection_string)
    writer = RedisArrowWriter(
        endpoint, project=cfg.project, max_attempts=2, backoff_s=0.05, socket_timeout=0.2
    )
    redis_db.execute_command("CLIENT", "PAUSE", "20000", "WRITE")
    try:
        with pytest.raises(FeatureStoreError) as err:
            Materializer(
                redis_hook.store, writer=writer, target=cfg.online_target(), cache=redis_hook.cache
            ).run(utc(DAY0), utc(days(2)[-1]))
    finally:
        redis_db.execute_command("CLIENT", "UNPAUSE")
        writer.close()
    assert f"Redis at {endpoint.address} failed after 2 attempts" in str(err.value)
    assert redis_hook.cache.count() == 0
    # The paused commands may still land, before or during the next run: it redoes the work all the
    # same, and what the store serves afterwards is the source.
    again = redis_hook.materialize(start=utc(DAY0), end=utc(days(2)[-1])).to_xcom()
    assert again["cache_misses"] == 4 and again["cache_hits"] == 0
    source = read_source().to_pydict()
    store = redis_hook.store
    served = store.get_online_features(
        features=store.get_feature_service("scene_training"),
        entity_rows=[{"scene_id": s} for s in source["scene_id"]],
    ).to_dict()
    assert served["speed_mean_mps"] == source["speed_mean_mps"]


def test_unreachable_redis_fails_naming_the_address(data_dir: Path) -> None:
    from tests.fixtures.services import free_port

    write_days(1, scenes=2)
    port = free_port()
    hook = FeastHook(feast_conn_id=None, online_store="redis", redis_connection_string=f"127.0.0.1:{port}")
    hook.apply()
    writer = RedisArrowWriter(
        RedisEndpoint.from_feast(f"127.0.0.1:{port}"), project="nuro_ml", max_attempts=2, backoff_s=0.01
    )
    with pytest.raises(FeatureStoreError, match=f"127.0.0.1:{port}/0 failed after 2 attempts"):
        Materializer(hook.store, writer=writer, target="t", cache=None).run(utc(DAY0), utc(days(2)[-1]))
