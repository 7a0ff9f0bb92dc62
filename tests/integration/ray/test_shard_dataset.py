"""The Ray Data shard input on a local Ray instance: moto-S3 shards read through the NVMe cache."""

from __future__ import annotations

import contextlib
import os
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from nuro_ml.training_data.loader import LocalSource, ShardSourceConfig, read_shard
from nuro_ml.training_data.object_store import DirectoryObjectStore
from nuro_ml.training_data.ray_data import (
    ShardReadCounters,
    default_read_tasks,
    epoch_input,
    iter_training_batches,
    shard_dataset,
    shard_homes,
    window_bytes,
)
from nuro_ml.training_data.spec import DatasetSpec
from nuro_ml.training_data.staging import stage_shards
from nuro_ml.training_data.synthetic import write_ego_motion

from tests.fixtures.s3 import CREDENTIALS, moto_endpoint, s3_client  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

DAY = date(2026, 11, 24)


@pytest.fixture(scope="module")
def local_ray(moto_endpoint: str) -> Iterator[Any]:  # noqa: F811
    import ray

    # Read tasks run in Ray's worker processes, which take the driver's environment at start.
    saved = {key: os.environ.get(key) for key in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield ray
    finally:
        ray.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def staged(moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:  # noqa: F811
    work = tmp_path_factory.mktemp("shard-dataset")
    write_ego_motion(work / "etl", [DAY], ["veh-1", "veh-2", "veh-3"], drives_per_day=1, drive_seconds=60.0)
    client = s3_client(moto_endpoint)
    client.create_bucket(Bucket="training")
    spec = DatasetSpec(start=DAY, end=DAY, shard_rows=48)
    manifest = stage_shards(spec, work / "etl", "s3://training/brake", client).manifest
    # The same shards on local disk: the expected content of every epoch.
    local = DirectoryObjectStore(work / "copy")
    stage_shards(spec, work / "etl", "s3://training/brake", local)
    return manifest, work


def _windows(batches: Iterator[tuple[np.ndarray, np.ndarray]]) -> list[tuple[bytes, float]]:
    out = []
    for x, y in batches:
        assert x.flags.writeable and x.dtype == np.float32
        out.extend(zip(map(bytes, x.reshape(len(y), -1)), y.tolist(), strict=True))
    return out


def test_every_window_once_per_epoch_in_a_new_order_and_epoch_two_reads_only_the_cache(
    local_ray: Any,
    staged: tuple[dict[str, Any], Path],
    moto_endpoint: str,  # noqa: F811
) -> None:
    manifest, work = staged
    shards = manifest["splits"]["train"]["shards"]
    channels = len(manifest["channels"])
    assert len(shards) >= 4
    expected: Counter[tuple[bytes, float]] = Counter()
    for shard in shards:
        x, y = read_shard(
            LocalSource(work / "copy" / "training" / "brake" / "shards"), shard["uri"], channels
        )
        expected.update(zip(map(bytes, x.reshape(len(y), -1)), y.tolist(), strict=True))

    counters = ShardReadCounters.remote()  # type: ignore[attr-defined]
    config = ShardSourceConfig(
        cache_dir=str(work / "nvme"), cache_bytes=1 << 30, s3_endpoint_url=moto_endpoint
    )
    dataset = shard_dataset(shards, config, window_bytes=window_bytes(manifest), counters=counters)
    # One read task per CPU of the instance, each reading a group of shards.
    assert default_read_tasks(len(shards)) == 2

    epochs, reads = [], []
    for _ in range(3):
        before = local_ray.get(counters.totals.remote())
        # batch_size 1 and no drop: every window of the split, none dropped by batching.
        epochs.append(
            _windows(iter_training_batches(dataset, channels=channels, batch_size=1, drop_last=False))
        )
        reads.append(epoch_input(before, local_ray.get(counters.totals.remote())))

    for windows in epochs:
        assert Counter(windows) == expected
    # Shard order and rows inside each shard are drawn afresh every epoch.
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2]

    first, *later = reads
    assert first["shards_read"] == len(shards) and first["cache_misses"] == len(shards)
    assert first["remote_bytes"] == sum(s["bytes"] for s in shards)
    for epoch in later:
        assert epoch == {
            "shards_read": len(shards),
            "remote_bytes": 0,
            "cache_hits": len(shards),
            "cache_misses": 0,
            "cache_hit_rate": 1.0,
        }
    per_node = local_ray.get(counters.per_node.remote())
    assert len(per_node) == 1 and next(iter(per_node.values()))["hits"] == 2 * len(shards)


def test_read_tasks_must_be_positive(local_ray: Any, staged: tuple[dict[str, Any], Path]) -> None:
    manifest, work = staged
    config = ShardSourceConfig(local_shards=str(work / "copy" / "training" / "brake" / "shards"))
    with pytest.raises(ValueError, match="read_tasks must be positive, got 0"):
        shard_dataset(manifest["splits"]["train"]["shards"], config, window_bytes=640, read_tasks=0)


@contextlib.contextmanager
def _on_the_cluster(
    ray_cluster: Any, work: Path, name: str
) -> Iterator[tuple[Any, list[dict[str, Any]], Any]]:
    """Small shards staged under ``work/name`` (so both nodes are home to some whatever their
    ids), with this driver joined to the two-node cluster: ``(manifest, shards, config)``."""
    import ray

    spec = DatasetSpec(start=DAY, end=DAY, shard_rows=12)
    manifest = stage_shards(
        spec, work / "etl", f"s3://training/{name}", DirectoryObjectStore(work / name)
    ).manifest
    config = ShardSourceConfig(local_shards=str(work / name / "training" / name / "shards"))
    # The local instance of the other tests is gone: this driver joins the two-node cluster.
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address=ray_cluster.gcs_address, log_to_driver=False)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        yield manifest, manifest["splits"]["train"]["shards"], config
    finally:
        ray.shutdown()


def test_on_two_nodes_every_shard_is_read_on_its_home_node(
    ray_cluster: Any,
    staged: tuple[dict[str, Any], Path],
) -> None:
    import ray

    _, work = staged
    with _on_the_cluster(ray_cluster, work, "fine") as (manifest, shards, config):
        assert len(shards) >= 16
        channels = len(manifest["channels"])
        nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) >= 1)
        assert len(nodes) == 2
        homes = shard_homes([s["uri"] for s in shards], nodes)
        assert len(homes) == 2, "the test data should give both nodes shards"
        counters = ShardReadCounters.remote()  # type: ignore[attr-defined]
        dataset = shard_dataset(shards, config, window_bytes=window_bytes(manifest), counters=counters)
        for _ in range(2):
            windows = _windows(
                iter_training_batches(dataset, channels=channels, batch_size=1, drop_last=False)
            )
            assert len(windows) == manifest["splits"]["train"]["rows"]
            assert len(set(windows)) == len(windows)
        per_node = ray.get(counters.per_node.remote())
        # Each node read its own shards, twice (two epochs), and nothing else.
        assert per_node.keys() == homes.keys()
        for node, mine in homes.items():
            assert per_node[node]["bytes_read"] == 2 * sum(shards[i]["bytes"] for i in mine)


class _CpuHolder:
    """Holds the CPUs it was created with until it is killed."""

    def ready(self) -> bool:
        return True


def test_a_home_node_without_a_free_cpu_hands_its_reads_to_another_node(
    ray_cluster: Any,
    staged: tuple[dict[str, Any], Path],
) -> None:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    _, work = staged
    with _on_the_cluster(ray_cluster, work, "busy") as (manifest, shards, config):
        channels = len(manifest["channels"])
        cpus = {n["NodeID"]: int(n["Resources"]["CPU"]) for n in ray.nodes() if n["Alive"]}
        busy = min(cpus, key=lambda node: cpus[node])
        homes = shard_homes([s["uri"] for s in shards], sorted(cpus))
        assert busy in homes and len(homes) == 2, "the test data should give both nodes shards"
        # Every CPU of one node taken, as by a Ray Train worker group placed wholly on it.
        pinned = NodeAffinitySchedulingStrategy(busy, soft=False)
        holder = ray.remote(_CpuHolder).options(num_cpus=cpus[busy], scheduling_strategy=pinned).remote()
        assert ray.get(holder.ready.remote(), timeout=120)
        counters = ShardReadCounters.remote()  # type: ignore[attr-defined]
        dataset = shard_dataset(shards, config, window_bytes=window_bytes(manifest), counters=counters)
        epoch: list[list[tuple[bytes, float]]] = []
        reader = threading.Thread(
            target=lambda: epoch.append(
                _windows(iter_training_batches(dataset, channels=channels, batch_size=1, drop_last=False))
            ),
            daemon=True,
        )
        reader.start()
        reader.join(timeout=120)
        assert not reader.is_alive(), "the busy node's read tasks waited for its CPUs"
        [windows] = epoch
        assert len(windows) == len(set(windows)) == manifest["splits"]["train"]["rows"]
        per_node = ray.get(counters.per_node.remote())
        # Every shard was read once, the busy node's by the other node.
        assert busy not in per_node
        assert sum(node["bytes_read"] for node in per_node.values()) == sum(s["bytes"] for s in shards)
        ray.kill(holder)
