"""NVMe shard cache against a local S3 endpoint (moto server on loopback)."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from pathlib import Path

import pytest
from nuro_ml.exceptions import ShardCacheError
from nuro_ml.features.nvme_cache import ShardCache

from tests.fixtures.s3 import moto_endpoint  # noqa: F401
from tests.fixtures.s3 import s3_client as _client

pytestmark = pytest.mark.integration

BUCKET = "training-shards"
SHARD_BYTES = 256 * 1024


@pytest.fixture(scope="module")
def s3_endpoint(moto_endpoint: str) -> str:  # noqa: F811
    client = _client(moto_endpoint)
    client.create_bucket(Bucket=BUCKET)
    for i in range(6):
        client.put_object(Bucket=BUCKET, Key=f"epoch/shard-{i:03d}.bin", Body=_payload(i))
    return moto_endpoint


def _payload(i: int) -> bytes:
    seed = hashlib.sha256(str(i).encode()).digest()
    return (seed * (SHARD_BYTES // len(seed) + 1))[:SHARD_BYTES]


def _uri(i: int) -> str:
    return f"s3://{BUCKET}/epoch/shard-{i:03d}.bin"


def test_read_through_hits_and_lru_eviction_within_capacity(s3_endpoint: str, tmp_path: Path) -> None:
    cache = ShardCache(tmp_path / "nvme", capacity_bytes=3 * SHARD_BYTES, s3_client=_client(s3_endpoint))
    for epoch in range(2):
        for i in range(3):
            assert cache.read_bytes(_uri(i)) == _payload(i), (epoch, i)
    assert (cache.stats.misses, cache.stats.hits) == (3, 3)
    assert cache.stats.hit_rate == 0.5
    assert cache.stats.bytes_from_remote == 3 * SHARD_BYTES

    cache.read_bytes(_uri(0))  # shard 0 is now the most recently read
    os.utime(cache._data(cache.key(_uri(1))), (1, 1))  # and shard 1 the least
    cache.read_bytes(_uri(3))
    assert cache.used_bytes() <= 3 * SHARD_BYTES
    assert cache.stats.evictions == 1
    cached = {p.name for p in (tmp_path / "nvme" / "data").iterdir()}
    assert cached == {cache.key(_uri(i)) for i in (0, 2, 3)}
    assert list((tmp_path / "nvme" / "tmp").iterdir()) == []


def test_corrupted_cached_shard_is_refetched_when_verifying(s3_endpoint: str, tmp_path: Path) -> None:
    cache = ShardCache(
        tmp_path / "nvme",
        capacity_bytes=10 * SHARD_BYTES,
        s3_client=_client(s3_endpoint),
        verify_on_read=True,
    )
    cache.read_bytes(_uri(4))
    data = cache._data(cache.key(_uri(4)))
    data.write_bytes(b"\0" * SHARD_BYTES)  # bit rot on disk, same size
    assert cache.read_bytes(_uri(4)) == _payload(4)
    assert cache.stats.checksum_failures == 1 and cache.stats.misses == 2


def test_missing_object_is_a_clear_error(s3_endpoint: str, tmp_path: Path) -> None:
    cache = ShardCache(tmp_path / "nvme", capacity_bytes=SHARD_BYTES, s3_client=_client(s3_endpoint))
    with pytest.raises(ShardCacheError, match=r"s3://training-shards/epoch/nope\.bin"):
        cache.read_bytes(f"s3://{BUCKET}/epoch/nope.bin")
    assert list((tmp_path / "nvme" / "data").iterdir()) == []


def _reader(endpoint: str, root: str, rounds: int, queue: multiprocessing.Queue) -> None:
    cache = ShardCache(root, capacity_bytes=2 * SHARD_BYTES, s3_client=_client(endpoint))
    bad = []
    for r in range(rounds):
        for i in range(6):
            j = (i + r + os.getpid()) % 6
            if cache.read_bytes(_uri(j)) != _payload(j):
                bad.append(j)
    queue.put((bad, cache.stats.to_dict()))


def test_concurrent_readers_never_see_partial_shards(s3_endpoint: str, tmp_path: Path) -> None:
    # Spawned, not forked: a fork of this multi-threaded test process (moto's server thread,
    # logging locks) can leave a child deadlocked before it reads a single shard.
    ctx = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue = ctx.Queue()
    root = str(tmp_path / "nvme")
    procs = [ctx.Process(target=_reader, args=(s3_endpoint, root, 3, queue), daemon=True) for _ in range(4)]
    try:
        for p in procs:
            p.start()
        results = [queue.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(timeout=30)
            assert p.exitcode == 0
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(timeout=10)
    assert all(bad == [] for bad, _ in results)
    assert sum(stats["hits"] + stats["misses"] for _, stats in results) == 4 * 3 * 6
    assert sum(stats["evictions"] for _, stats in results) > 0  # capacity forced evictions under readers
