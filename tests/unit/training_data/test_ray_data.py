"""The Ray Data shard source's read tasks, run in this process (no Ray cluster needed)."""

from __future__ import annotations

from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from nuro_ml.training_data.loader import LocalSource, ShardSourceConfig, read_shard
from nuro_ml.training_data.object_store import DirectoryObjectStore
from nuro_ml.training_data.ray_data import ShardDatasource, epoch_input, window_bytes
from nuro_ml.training_data.spec import DatasetSpec
from nuro_ml.training_data.staging import stage_shards
from nuro_ml.training_data.synthetic import write_ego_motion
from nuro_ml.training_data.windows import to_arrays

DAY = date(2026, 11, 24)


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    work = tmp_path_factory.mktemp("ray-data")
    write_ego_motion(work / "etl", [DAY], ["veh-1", "veh-2", "veh-3"], drives_per_day=1, drive_seconds=60.0)
    store = DirectoryObjectStore(work / "storage")
    spec = DatasetSpec(start=DAY, end=DAY, shard_rows=64)
    manifest = stage_shards(spec, work / "etl", "s3://b/p", store).manifest
    return manifest, work / "storage" / "b" / "p" / "shards"


def _datasource(staged: tuple[dict[str, Any], Path], **kwargs: Any) -> ShardDatasource:
    manifest, shard_dir = staged
    return ShardDatasource(
        manifest["splits"]["train"]["shards"],
        ShardSourceConfig(local_shards=str(shard_dir)),
        window_bytes=window_bytes(manifest),
        **kwargs,
    )


def test_read_tasks_cover_every_shard_once_with_its_row_count(staged) -> None:
    manifest, _ = staged
    shards = manifest["splits"]["train"]["shards"]
    assert len(shards) >= 4
    tasks = _datasource(staged, seed=1).get_read_tasks(3)
    assert len(tasks) == 3
    files = [uri for task in tasks for uri in task.metadata.input_files]
    assert sorted(files) == sorted(s["uri"] for s in shards)
    assert sum(task.metadata.num_rows for task in tasks) == manifest["splits"]["train"]["rows"]
    # More tasks asked for than shards: one per shard.
    assert len(_datasource(staged).get_read_tasks(1000)) == len(shards)


def test_each_execution_deals_the_shards_in_a_new_order(staged) -> None:
    def orders(source: ShardDatasource) -> list[list[tuple[str, ...]]]:
        return [[t.metadata.input_files for t in source.get_read_tasks(len(source.shards))] for _ in range(4)]

    first = orders(_datasource(staged, seed=5))
    assert len({tuple(o) for o in first}) > 1
    # The same seed replays the same sequence of orders.
    assert orders(_datasource(staged, seed=5)) == first
    fixed = _datasource(staged, shuffle=False)
    assert fixed.get_read_tasks(1)[0].metadata.input_files == tuple(s["uri"] for s in fixed.shards)


def test_read_task_yields_each_shard_with_its_rows_permuted(staged) -> None:
    manifest, shard_dir = staged
    channels = len(manifest["channels"])
    [task] = _datasource(staged, seed=2).get_read_tasks(1)
    blocks = list(task())
    assert len(blocks) == len(task.metadata.input_files)
    for uri, block in zip(task.metadata.input_files, blocks, strict=True):
        assert block.column_names == ["x", "y"]
        x, y = to_arrays(block, channels)
        x_ref, y_ref = read_shard(LocalSource(shard_dir), uri, channels)
        assert x.shape == x_ref.shape and x.dtype == np.float32
        # The same windows, in another order (each window keeps its label).
        ours = Counter(zip(map(bytes, x.reshape(len(y), -1)), y.tolist(), strict=True))
        ref = Counter(zip(map(bytes, x_ref.reshape(len(y_ref), -1)), y_ref.tolist(), strict=True))
        assert ours == ref
        assert not np.array_equal(x, x_ref)


def test_unshuffled_read_returns_the_shard_as_stored(staged) -> None:
    _, shard_dir = staged
    [task] = _datasource(staged, shuffle=False).get_read_tasks(1)
    first = next(iter(task()))
    stored = pq.read_table(shard_dir / task.metadata.input_files[0].rsplit("/", 1)[-1], columns=["x", "y"])
    assert first.equals(stored)


def test_bad_inputs_name_what_is_wrong(staged) -> None:
    _, shard_dir = staged
    config = ShardSourceConfig(local_shards=str(shard_dir))
    with pytest.raises(ValueError, match="no shards"):
        ShardDatasource([], config, window_bytes=640)
    with pytest.raises(ValueError, match=r"shard entries \[1\] lack 'uri' or 'rows'"):
        ShardDatasource([{"uri": "s3://b/x", "rows": 3}, {"uri": "s3://b/y"}], config, window_bytes=640)
    with pytest.raises(ValueError, match="give cache_dir, local_shards or direct=True"):
        ShardSourceConfig()
    with pytest.raises(ValueError, match="cache_bytes must be positive"):
        ShardSourceConfig(cache_dir="/tmp/x", cache_bytes=0)


def test_epoch_input_is_the_difference_of_two_snapshots() -> None:
    before = {"hits": 2, "misses": 5, "bytes_from_remote": 500, "shards_read": 7}
    after = {"hits": 9, "misses": 5, "bytes_from_remote": 500, "shards_read": 14}
    assert epoch_input(before, after) == {
        "shards_read": 7,
        "remote_bytes": 0,
        "cache_hits": 7,
        "cache_misses": 0,
        "cache_hit_rate": 1.0,
    }
    assert epoch_input(before, before)["cache_hit_rate"] is None
