"""Training shards as a Ray Data dataset, every shard read through the NVMe cache of its node.

:func:`shard_dataset` turns a manifest split into a :class:`ray.data.Dataset` built on
:class:`ShardDatasource`: a few read tasks per execution (one per CPU of the cluster by default),
each reading a group of shards through the :class:`~nuro_ml.features.nvme_cache.ShardCache` at
the same path on its own node. On several nodes every shard has a home node (:func:`shard_homes`)
where its read task runs while that node has a free CPU. The first epoch fills each node's cache
from object storage; later epochs, and later jobs on the same nodes, read local disk. Pass the
dataset to a Ray Train trainer (``datasets={"train": ...}``); in the training loop
:func:`iter_training_batches` turns the worker's shard into ``(x, y)`` numpy batches.

Shuffling is done without a global barrier and without a per-row shuffle buffer: each execution
(epoch) deals the shards to the read tasks in a fresh order, and each task gathers consecutive
shards into blocks of Ray Data's target block size and permutes every block's rows as one Arrow
``take``. Staging already spread every drive's windows over all shards, so a batch is a random
sample of the split; Ray Data's local shuffle buffer is available but off by default (it gathers
every batch row by row).

Read tasks run in other processes than the training loop, so their cache counters are summed in a
small actor, :class:`ShardReadCounters`; a training loop diffs its totals around an epoch to get
that epoch's cache hits, misses and bytes read from remote storage.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import ray
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from nuro_ml.training_data.loader import ShardSource, ShardSourceConfig, read_shard_table, rebatch
from nuro_ml.training_data.windows import FEATURES_COLUMN, LABEL_COLUMN, to_arrays

if TYPE_CHECKING:
    from ray import ObjectRef
    from ray.actor import ActorHandle
    from ray.data import DataIterator, Dataset
    from ray.data.context import DataContext

#: The counters a read task reports for the shards it read (from the source's own counters).
COUNTER_KEYS = ("hits", "misses", "bytes_from_remote", "bytes_from_cache", "bytes_read")

#: Block size when the Ray Data context sets none (its own default target).
DEFAULT_BLOCK_BYTES = 128 << 20

#: Most bytes one read task reads by default: bounds what a retried or straggling task redoes.
MAX_TASK_BYTES = 1 << 30

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
    counters = source.counters()
    return {key: int(counters.get(key, 0)) for key in COUNTER_KEYS}


@ray.remote(num_cpus=0)
class ShardReadCounters:
    """Cache counters summed over every read task of a job, per node and in total."""

    def __init__(self) -> None:
        self._per_node: dict[str, dict[str, int]] = {}
        self._shards_read = 0

    def add(self, node_id: str, delta: dict[str, int], shards: int = 1) -> None:
        node = self._per_node.setdefault(node_id, dict.fromkeys(COUNTER_KEYS, 0))
        for key in COUNTER_KEYS:
            node[key] += int(delta.get(key, 0))
        self._shards_read += shards

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
        context = data_context or ray.data.DataContext.get_current()
        block_bytes = context.target_max_block_size or DEFAULT_BLOCK_BYTES
        # Shards are dealt round-robin over the tasks, so every task holds a slice of this
        # execution's shard order and the blocks leave in a permuted order whatever the grouping.
        n_tasks = min(max(1, parallelism), len(order))
        groups = [order[i::n_tasks] for i in range(n_tasks)]
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
                    # A partial of a module-level function: Ray pickles it by reference, where a
                    # closure would be pickled by value, module scan included, for every task of
                    # every epoch.
                    functools.partial(
                        read_shards,
                        tuple(s["uri"] for s in shards),
                        self.source,
                        self.counters,
                        self.shuffle,
                        row_seed,
                        block_bytes,
                    ),
                    metadata,
                    per_task_row_limit=per_task_row_limit,
                )
            )
        return tasks


def read_shards(
    uris: Sequence[str],
    config: ShardSourceConfig,
    counters: ActorHandle | None,
    shuffle: bool,
    seed: Sequence[int] | None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> Iterator[pa.Table]:
    """The body of one read task: the shards of ``uris`` as blocks of about ``block_bytes``.

    Consecutive shards are gathered into one block (Ray Data would coalesce them anyway: a block
    costs milliseconds of bookkeeping however small), and with ``shuffle`` the block's rows are
    permuted as a whole, so every block mixes the rows of several shards. The cache counters of
    the whole task are reported once, before its last block is handed on: once a consumer has
    seen every block of an epoch, the counters hold every read of that epoch.
    """
    source = process_source(config)
    rng = np.random.default_rng(seed)
    before = _counters_of(source) if counters is not None else {}
    pending: list[pa.Table] = []
    pending_bytes = 0
    for position, uri in enumerate(uris):
        table = read_shard_table(source, uri, [FEATURES_COLUMN, LABEL_COLUMN])
        pending.append(table)
        pending_bytes += table.nbytes
        last = position == len(uris) - 1
        if pending_bytes < block_bytes and not last:
            continue
        reported: ObjectRef[None] | None = None
        if counters is not None and last:
            # Every read of the task is done: the report travels while the block is permuted.
            after = _counters_of(source)
            node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"
            delta = {k: after[k] - before[k] for k in COUNTER_KEYS}
            reported = counters.add.remote(node_id, delta, len(uris))
        block = pending[0] if len(pending) == 1 else pa.concat_tables(pending)
        pending, pending_bytes = [], 0
        if shuffle and block.num_rows > 1:
            block = block.take(pa.array(rng.permutation(block.num_rows)))
        if reported is not None:
            ray.get(reported)
        yield block


def shard_dataset(
    shards: Sequence[dict[str, Any]],
    source: ShardSourceConfig,
    *,
    window_bytes: int,
    counters: ActorHandle | None = None,
    shuffle: bool = True,
    seed: int | None = None,
    read_tasks: int | None = None,
    node_affinity: bool = True,
) -> Dataset:
    """A Ray Data dataset of the windows in ``shards``: columns ``x`` (fixed-size binary) and ``y``.

    :param read_tasks: read tasks per execution (epoch), each reading a group of shards; None:
        one per CPU of the Ray cluster, more if a task would read over 1 GiB, never more than one
        per shard. Ray Data schedules read tasks one by one from the driver at a cost of
        milliseconds to tens of milliseconds each, however little they read, so a task per small
        shard spends more time being scheduled than reading.
    :param node_affinity: on a cluster of several nodes with CPUs, give every shard a home node
        (rendezvous hashing of the shard over the nodes alive now) and run the read tasks of a
        node's shards there, softly (elsewhere if that node is gone or has no free CPU:
        :func:`home_node_strategy`). The first epoch fills each node's cache with its own shards
        only; every later epoch and later job on the same nodes reads them from there, and a
        node leaving moves only its own shards.
    """
    datasource = ShardDatasource(
        shards, source, window_bytes=window_bytes, counters=counters, shuffle=shuffle, seed=seed
    )
    if read_tasks is not None and read_tasks < 1:
        raise ValueError(f"shard_dataset: read_tasks must be positive, got {read_tasks}")
    if not ray.is_initialized():
        ray.init()
    nodes = _cpu_nodes() if node_affinity else {}
    if len(nodes) < 2:
        if read_tasks is None:
            read_tasks = default_read_tasks(len(datasource.shards), datasource.estimate_inmemory_data_size())
        return ray.data.read_datasource(
            datasource, override_num_blocks=min(read_tasks, len(datasource.shards))
        )

    homes = shard_homes([s["uri"] for s in datasource.shards], sorted(nodes))
    total_cpus = sum(nodes.values())
    parts = []
    for index, (node_id, mine) in enumerate(sorted(homes.items())):
        part = ShardDatasource(
            [datasource.shards[i] for i in mine],
            source,
            window_bytes=window_bytes,
            counters=counters,
            shuffle=shuffle,
            # Each node's part draws its own permutations from the caller's seed.
            seed=None if seed is None else seed * len(homes) + index,
        )
        # The node's share of the read tasks: by its CPUs, or by the caller's total.
        wanted = nodes[node_id] if read_tasks is None else -(-read_tasks * nodes[node_id] // total_cpus)
        wanted = max(wanted, -(-part.estimate_inmemory_data_size() // MAX_TASK_BYTES))
        parts.append(
            ray.data.read_datasource(
                part,
                override_num_blocks=max(1, min(wanted, len(part.shards))),
                ray_remote_args={"scheduling_strategy": home_node_strategy(node_id)},
            )
        )
    return parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]


def home_node_strategy(node_id: str) -> NodeAffinitySchedulingStrategy:
    """Run a read task on ``node_id`` while it has a free CPU, on any other node otherwise.

    Soft node affinity alone only leaves a node that is gone or cannot ever fit the task: a home
    node that is alive but whose CPUs are all held waits for them, indefinitely. Under Ray Train
    that is a deadlock whenever the training workers take every CPU of a node (a restarted worker
    group packed onto one node, say): the workers hold the CPUs and wait for the read tasks, which
    wait for those CPUs. Spilling when the home node is busy costs one read through another
    node's cache.
    """
    # _spill_on_unavailable is Ray's own switch for this (Ray Serve places replicas with it);
    # soft affinity without it waits for the node's resources.
    return NodeAffinitySchedulingStrategy(node_id, soft=True, _spill_on_unavailable=True)


def shard_homes(uris: Sequence[str], node_ids: Sequence[str]) -> dict[str, list[int]]:
    """The home node of every shard: ``{node_id: [indexes into uris]}``, nodes without shards left out.

    Rendezvous (highest random weight) hashing: a shard goes to the node whose hash with it is
    highest, so the homes hold while the node set does, and a node that leaves gives up its own
    shards only, spread over the others.
    """
    if not node_ids:
        raise ValueError("shard_homes: no nodes")
    homes: dict[str, list[int]] = {}
    for index, uri in enumerate(uris):
        home = max(node_ids, key=lambda node: hashlib.sha256(f"{node}|{uri}".encode()).digest())
        homes.setdefault(home, []).append(index)
    return homes


def _cpu_nodes() -> dict[str, int]:
    """Alive nodes of the cluster that can run read tasks, with their CPUs."""
    return {
        node["NodeID"]: int(node["Resources"]["CPU"])
        for node in ray.nodes()
        if node.get("Alive") and node.get("Resources", {}).get("CPU", 0) >= 1
    }


def default_read_tasks(n_shards: int, total_bytes: int = 0) -> int:
    """One read task per CPU of the Ray cluster (started here if it is not yet), more when a task
    would read over :data:`MAX_TASK_BYTES`, at most one per shard."""
    if not ray.is_initialized():
        ray.init()
    cpus = int(ray.cluster_resources().get("CPU", 1))
    return max(1, min(n_shards, max(cpus, -(-total_bytes // MAX_TASK_BYTES))))


def iter_training_batches(
    iterator: DataIterator | Dataset,
    *,
    channels: int,
    batch_size: int,
    shuffle_buffer_batches: int = 0,
    seed: int | None = None,
    drop_last: bool = True,
    prefetch_batches: int = 2,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(x [B, ticks, channels] float32, y [B] float32)`` batches of a worker's dataset shard.

    :param iterator: ``ray.train.get_dataset_shard(name)`` inside a training loop, or a dataset.
    :param channels: input channels per tick (the manifest's ``channels``).
    :param batch_size: windows per batch.
    :param shuffle_buffer_batches: rows of this many batches are mixed in Ray Data's local shuffle
        buffer (0, the default, turns it off). The read tasks already permute every shard's rows
        and deal the shards in a new order each epoch, and staging spreads each drive's windows
        over all shards; the buffer adds mixing across neighbouring shards at the price of a
        row-by-row gather of every batch.
    :param seed: seed of the local shuffle (None: fresh randomness every epoch).
    :param drop_last: skip a short last batch (keeps every DDP rank at the same step count when
        the dataset was split with ``equal=True``, as Ray Train does by default).
    :param prefetch_batches: blocks (batches, with the shuffle buffer) Ray Data fetches ahead of
        the consumer.
    """
    if shuffle_buffer_batches > 0:
        batches = iterator.iter_batches(
            batch_size=batch_size,
            batch_format="pyarrow",
            drop_last=drop_last,
            local_shuffle_buffer_size=batch_size * shuffle_buffer_batches,
            local_shuffle_seed=seed,
            prefetch_batches=prefetch_batches,
        )
        for batch in batches:
            # The Arrow buffers are read-only and shared with the object store: torch wants its own.
            yield to_arrays(batch, channels, writable=True)
        return
    # Whole blocks, each copied once out of the object store, then cut into batches here: Ray
    # Data's own batching costs a slice, a thread hand-off and its bookkeeping per batch.
    blocks = iterator.iter_batches(
        # None yields whole blocks (documented on Dataset and DataIterator; DataIterator's
        # annotation says int only).
        batch_size=None,  # type: ignore[arg-type]
        batch_format="pyarrow",
        prefetch_batches=prefetch_batches,
    )
    yield from rebatch(
        (to_arrays(block, channels, writable=True) for block in blocks), batch_size, drop_last=drop_last
    )


def window_bytes(manifest: dict[str, Any]) -> int:
    """Bytes of one window's features in the manifest's shards."""
    return 4 * int(manifest["window_ticks"]) * len(manifest["channels"])
