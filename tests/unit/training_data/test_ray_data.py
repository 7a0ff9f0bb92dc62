"""The Ray Data shard source's read tasks, run in this process (no Ray cluster needed)."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from nuro_ml.training_data.loader import ShardSourceConfig, rebatch
from nuro_ml.training_data.object_store import DirectoryObjectStore
from nuro_ml.training_data.ray_data import (
    ShardDatasource,
    epoch_input,
    home_node_strategy,
    shard_homes,
    window_bytes,
)
from nuro_ml.training_data.spec import DatasetSpec
from nuro_ml.training_data.staging import stage_shards
from nuro_ml.training_data.synthetic import write_ego_motion
from nuro_ml.training_data.windows import to_arrays
from ray.data.context import DataContext

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


def _windows(table: pa.Table, channels: int) -> Counter[tuple[bytes, float]]:
    x, y = to_arrays(table, channels)
    return Counter(zip(map(bytes, x.reshape(len(y), -1)), y.tolist(), strict=True))


def test_read_task_mixes_the_rows_of_its_shards_in_one_block(staged) -> None:
    manifest, shard_dir = staged
    channels = len(manifest["channels"])
    [task] = _datasource(staged, seed=2).get_read_tasks(1)
    [block] = list(task())
    assert block.column_names == ["x", "y"]
    stored = [pq.read_table(shard_dir / uri.rsplit("/", 1)[-1]) for uri in task.metadata.input_files]
    # Every window of every shard once, each with its own label...
    expected: Counter[tuple[bytes, float]] = Counter()
    for table in stored:
        expected.update(_windows(table, channels))
    assert _windows(block, channels) == expected
    # ...and the block's first rows come from several shards, not from the first one alone.
    head = _windows(block.slice(0, 32), channels)
    assert sum(1 for table in stored if head & _windows(table, channels)) >= 3


def test_block_size_bounds_how_many_shards_a_block_mixes(staged) -> None:
    manifest, shard_dir = staged
    channels = len(manifest["channels"])
    context = DataContext.get_current().copy()
    context.target_max_block_size = 1
    [task] = _datasource(staged, seed=3).get_read_tasks(1, data_context=context)
    blocks = list(task())
    # A block per shard once a shard fills the target size: each is its shard, permuted.
    assert len(blocks) == len(task.metadata.input_files)
    for uri, block in zip(task.metadata.input_files, blocks, strict=True):
        stored = pq.read_table(shard_dir / uri.rsplit("/", 1)[-1], columns=["x", "y"])
        assert _windows(block, channels) == _windows(stored, channels)
        assert not block.equals(stored)


def test_unshuffled_read_returns_the_shards_as_stored(staged) -> None:
    _, shard_dir = staged
    [task] = _datasource(staged, shuffle=False).get_read_tasks(1)
    [block] = list(task())
    stored = pa.concat_tables(
        pq.read_table(shard_dir / uri.rsplit("/", 1)[-1], columns=["x", "y"])
        for uri in task.metadata.input_files
    )
    assert block.equals(stored)


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


def test_shard_homes_are_stable_balanced_and_move_only_a_leaving_nodes_shards() -> None:
    uris = [f"s3://b/p/shards/{i:04d}.parquet" for i in range(600)]
    nodes = ["node-a", "node-b", "node-c"]
    homes = shard_homes(uris, nodes)
    assert sorted(i for mine in homes.values() for i in mine) == list(range(len(uris)))
    assert all(150 < len(homes[node]) < 250 for node in nodes)
    # The same node set in any order gives the same homes.
    assert shard_homes(uris, list(reversed(nodes))) == homes
    # node-c leaves: its shards spread over the others, nobody else's shard moves.
    after = shard_homes(uris, ["node-a", "node-b"])
    for node in ("node-a", "node-b"):
        assert set(homes[node]) <= set(after[node])
    assert set(after["node-a"]) | set(after["node-b"]) == set(range(len(uris)))
    with pytest.raises(ValueError, match="no nodes"):
        shard_homes(uris, [])


def test_a_read_task_leaves_its_home_node_when_that_node_has_no_free_cpu() -> None:
    node = "ab" * 28
    strategy = home_node_strategy(node)
    assert strategy.node_id == node
    # Soft affinity alone waits for a busy node that is alive; the read must go elsewhere.
    assert strategy.soft and strategy._spill_on_unavailable


def test_rebatch_cuts_blocks_of_any_size_into_full_batches_in_order() -> None:
    rows = np.arange(23, dtype=np.float32)
    sizes = [5, 2, 9, 0, 7]
    bounds = np.cumsum([0, *sizes])
    blocks = [
        (rows[a:b, None] * np.ones((1, 3), np.float32), rows[a:b]) for a, b in itertools.pairwise(bounds)
    ]
    batches = list(rebatch(blocks, 4, drop_last=False))
    assert [len(y) for _, y in batches] == [4, 4, 4, 4, 4, 3]
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), rows)
    np.testing.assert_array_equal(np.concatenate([x for x, _ in batches])[:, 2], rows)
    # A batch inside one block is a view of it, no copy.
    x_inside, _ = batches[2]  # rows 8..11, all in the 9-row block
    assert np.shares_memory(x_inside, blocks[2][0])
    assert [len(y) for _, y in rebatch(blocks, 4, drop_last=True)] == [4] * 5
    assert list(rebatch([], 4, drop_last=False)) == []
    with pytest.raises(ValueError, match="batch_size must be positive"):
        list(rebatch(blocks, 0, drop_last=True))
