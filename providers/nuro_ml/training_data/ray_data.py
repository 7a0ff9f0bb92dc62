"""Training shards as a Ray Data dataset, every shard read through the NVMe cache of its node.

:func:`shard_dataset` turns a manifest split into a :class:`ray.data.Dataset` built on
:class:`ShardDatasource`: one read task per shard group, run wherever Ray Data schedules it, and
each task opens its shards through the :class:`~nuro_ml.features.nvme_cache.ShardCache` at the
same path on its own node. The first epoch fills each node's cache from object storage; later
epochs, and later jobs on the same nodes, read local disk. Pass the dataset to a Ray Train
trainer (``datasets={"train": ...}``); in the training loop :func:`iter_training_batches` turns
the worker's shard into ``(x, y)`` numpy batches.

Shuffling is the usual Ray Data recipe, done without a global barrier: each execution (epoch)
deals the shards to read tasks in a fresh order, each task permutes the rows of the shard it
read, and the consumer mixes rows of several shards in a local shuffle buffer.

Read tasks run in other processes than the training loop, so their cache counters are summed in a
small actor, :class:`ShardReadCounters`; a training loop diffs its totals around an epoch to get
that epoch's cache hits, misses and bytes read from remote storage.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from nuro_ml.training_data.loader import ShardSource, ShardSourceConfig
from nuro_ml.training_data.windows import FEATURES_COLUMN, LABEL_COLUMN, to_arrays

if TYPE_CHECKING:
    from ray.actor import ActorHandle
    from ray.data import DataIterator, Dataset
    from ray.data.context import DataContext

#: The counters a read task reports per shard it read (from the source's own stats).
COUNTER_KEYS = ("hits", "misses", "bytes_from_remote", "bytes_from_cache", "bytes_read")

_sources: dict[ShardSourceConfig, ShardSource] = {}
_sources_lock = threading.Lock()


def process_source(config: ShardSourceConfig) -> ShardSource:
    """The shard source of ``config`` in this process (one per process: a Ray worker runs many
    read tasks, and they share its cache handle and counters)."""
    with _sources_lock:
        source = _sources.get(config)
        if source is None:
            source = _sources[config] = config.build()
        return source


def _counters_of(source: ShardSource) -> dict[str, int]:
    stats = source.stats()
    return {key: int(stats.get(key, 0) or 0) for key in COUNTER_KEYS}


@ray.remote(num_cpus=0)
class ShardReadCounters:
    """Cache counters summed over every read task of a job, per node and in total."""

    def __init__(self) -> None:
        self._per_node: dict[str, dict[str, int]] = {}
        self._shards_read = 0

    def add(self, node_id: str, delta: dict[str, int]) -> None:
        node = self._per_node.setdefault(node_id, dict.fromkeys(COUNTER_KEYS, 0))
        for key in COUNTER_KEYS:
            node[key] += int(delta.get(key, 0))
        self._shards_read += 1

    def totals(self) -> dict[str, Any]:
        total = dict.fromkeys(COUNTER_KEYS, 0)
        for node in self._per_node.values():
            for key in COUNTER_KEYS:
                total[key] += node[key]
        return {**total, "shards_read": self._shards_read, "nodes": len(self._per_node)}

    def per_node(self) -> dict[str, dict[str, int]]:
        return {node: dict(values) for node, values in self._per_node.items()}


def epoch_input(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What the read tasks did between two :meth:`ShardReadCounters.totals` snapshots."""
    hits = int(after["hits"]) - int(before["hits"])
    misses = int(after["misses"]) - int(before["misses"])
    return {
        "shards_read": int(after["shards_read"]) - int(before["shards_read"]),
        "remote_bytes": int(after["bytes_from_remote"]) - int(before["bytes_from_remote"]),
        "cache_hits": hits,
        "cache_misses": misses,
        "cache_hit_rate": round(hits / (hits + misses), 4) if hits + misses else None,
    }


def _read_table(source: ShardSource, uri: str) -> pa.Table:
    # One read into an Arrow buffer: Parquet decodes from memory, not through Python file calls.
    with source.open(uri) as fh:
        data = fh.read()
    return pq.read_table(pa.BufferReader(data), columns=[FEATURES_COLUMN, LABEL_COLUMN])


class ShardDatasource(Datasource):
    """Ray Data source over training shards of a manifest split, read through a shard source.

    :param shards: manifest entries (``uri``, ``rows``, ``bytes``) of one split.
    :param source: where read tasks get shard bytes (the node's NVMe cache in production).
    :param window_bytes: bytes of one window's features (``ticks x channels x 4``).
    :param counters: a :class:`ShardReadCounters` handle the read tasks report to, or None.
    :param shuffle: deal shards in a new order each execution and permute rows inside each shard.
    :param seed: base seed of those permutations (None: fresh randomness every execution).
    """

    def __init__(
        self,
        shards: Sequence[dict[str, Any]],
        source: ShardSourceConfig,
        *,
        window_bytes: int,
        counters: ActorHandle | None = None,
        shuffle: bool = True,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if not shards:
            raise ValueError("ShardDatasource: the split has no shards")
        missing = [i for i, s in enumerate(shards) if "uri" not in s or "rows" not in s]
        if missing:
            raise ValueError(f"ShardDatasource: shard entries {missing[:5]} lack 'uri' or 'rows'")
        self.shards = [dict(s) for s in shards]
        self.source = source
        self.window_bytes = window_bytes
        self.counters = counters
        self.shuffle = shuffle
        self.seed = seed
        self._executions = 0

    def get_name(self) -> str:
        return "TrainingShards"

    def estimate_inmemory_data_size(self) -> int:
        return sum(self._shard_bytes(s) for s in self.shards)

    def _shard_bytes(self, shard: dict[str, Any]) -> int:
        return int(shard["rows"]) * (self.window_bytes + 1)

    def _order(self) -> list[int]:
        order = np.arange(len(self.shards))
        if not self.shuffle:
            return order.tolist()
        self._executions += 1
        entropy = None if self.seed is None else [self.seed, self._executions]
        return np.random.default_rng(entropy).permutation(order).tolist()

    def get_read_tasks(
        self,
        parallelism: int,
        per_task_row_limit: int | None = None,
        data_context: DataContext | None = None,
    ) -> list[ReadTask]:
        order = self._order()
        groups = [order[i :: max(1, parallelism)] for i in range(min(max(1, parallelism), len(order)))]
        tasks = []
        for task_index, group in enumerate(groups):
            shards = [self.shards[i] for i in group]
            metadata = BlockMetadata(
                num_rows=sum(int(s["rows"]) for s in shards),
                size_bytes=sum(self._shard_bytes(s) for s in shards),
                input_files=tuple(s["uri"] for s in shards),
                exec_stats=None,
            )
            row_seed = None if self.seed is None else [self.seed, self._executions, task_index]
            tasks.append(
                ReadTask(
                    _make_read_fn(shards, self.source, self.counters, self.shuffle, row_seed),
                    metadata,
                    per_task_row_limit=per_task_row_limit,
                )
            )
        return tasks


def _make_read_fn(
    shards: list[dict[str, Any]],
    config: ShardSourceConfig,
    counters: ActorHandle | None,
    shuffle: bool,
    seed: list[int] | None,
) -> Any:
    # A closure over plain values only: Ray pickles it into every read task.
    uris = [s["uri"] for s in shards]

    def read_shards() -> Iterable[pa.Table]:
        source = process_source(config)
        rng = np.random.default_rng(seed)
        node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"
        for uri in uris:
            before = _counters_of(source)
            table = _read_table(source, uri)
            if counters is not None:
                after = _counters_of(source)
                # Acknowledged before the block is handed on: once a consumer has seen every
                # block of an epoch, the counters hold every read of that epoch.
                ray.get(counters.add.remote(node_id, {k: after[k] - before[k] for k in COUNTER_KEYS}))
            if shuffle and table.num_rows > 1:
                table = table.take(pa.array(rng.permutation(table.num_rows)))
            yield table

    return read_shards


def shard_dataset(
    shards: Sequence[dict[str, Any]],
    source: ShardSourceConfig,
    *,
    window_bytes: int,
    counters: ActorHandle | None = None,
    shuffle: bool = True,
    seed: int | None = None,
) -> Dataset:
    """A Ray Data dataset of the windows in ``shards``: columns ``x`` (fixed-size binary) and ``y``.

    One read task per shard (Ray Data runs as many at once as its resources allow), so a slow
    object-storage read holds back one shard, not a group of them.
    """
    datasource = ShardDatasource(
        shards, source, window_bytes=window_bytes, counters=counters, shuffle=shuffle, seed=seed
    )
    return ray.data.read_datasource(datasource, override_num_blocks=len(datasource.shards))


def iter_training_batches(
    iterator: DataIterator | Dataset,
    *,
    channels: int,
    batch_size: int,
    shuffle_buffer_batches: int = 4,
    seed: int | None = None,
    drop_last: bool = True,
    prefetch_batches: int = 2,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(x [B, ticks, channels] float32, y [B] float32)`` batches of a worker's dataset shard.

    :param iterator: ``ray.train.get_dataset_shard(name)`` inside a training loop, or a dataset.
    :param channels: input channels per tick (the manifest's ``channels``).
    :param batch_size: windows per batch.
    :param shuffle_buffer_batches: rows of this many batches are mixed in a local shuffle buffer
        (0 turns it off); with several read tasks in flight the buffer mixes rows of several shards.
    :param seed: seed of the local shuffle (None: fresh randomness every epoch).
    :param drop_last: skip a short last batch (keeps every DDP rank at the same step count when
        the dataset was split with ``equal=True``, as Ray Train does by default).
    :param prefetch_batches: batches Ray Data prepares ahead of the consumer.
    """
    buffer = batch_size * shuffle_buffer_batches if shuffle_buffer_batches > 0 else None
    batches = iterator.iter_batches(
        batch_size=batch_size,
        batch_format="pyarrow",
        drop_last=drop_last,
        local_shuffle_buffer_size=buffer,
        local_shuffle_seed=seed if buffer else None,
        prefetch_batches=prefetch_batches,
    )
    for batch in batches:
        x, y = to_arrays(batch, channels)
        # The Arrow buffers are read-only and shared with the object store: torch wants its own.
        yield np.array(x, copy=True), y


def window_bytes(manifest: dict[str, Any]) -> int:
    """Bytes of one window's features in the manifest's shards."""
    return 4 * int(manifest["window_ticks"]) * len(manifest["channels"])
