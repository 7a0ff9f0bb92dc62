"""Sharded, shuffled batches of training windows, read through a pluggable shard source.

Any data-parallel training loop (Ray Train, ``torchrun``, a single process) calls
:class:`ShardLoader` with its rank and world size. Each epoch the shard list is permuted with
``(seed, epoch)`` and dealt round-robin to the ranks, rows are shuffled inside each rank's stream,
and every rank yields the same number of full batches (the smallest share decides), so collective
operations such as DDP's all-reduce never wait on a rank that ran out of data.

Sources: :class:`CachedS3Source` (through the node's NVMe :class:`~nuro_ml.features.nvme_cache.ShardCache`,
the production path), :class:`S3Source` (straight from object storage) and :class:`LocalSource`
(shards already on local disk, the path a bare GPU box uses); :class:`ShardSourceConfig` is the
picklable recipe other processes (Ray Data read tasks) build their source from. This module
imports numpy and pyarrow only (boto3 when a source for S3 is built).

Ray Train workloads read the same shards through Ray Data instead
(:mod:`nuro_ml.training_data.ray_data`), with the same sources.
"""

from __future__ import annotations

import io
import itertools
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from nuro_ml.training_data.windows import to_arrays


class ShardSource(Protocol):
    """Where shard bytes come from."""

    def open(self, uri: str) -> IO[bytes]: ...

    def counters(self) -> dict[str, int]:
        """Cumulative integer counters only (hits, bytes read...): cheap enough to take per read."""
        ...

    def stats(self) -> dict[str, Any]:
        """The counters plus a description of the source (its kind, the cache's size and fill)."""
        ...


class LocalSource:
    """Shards on local disk: ``s3://bucket/a/b/<name>`` is read from ``<root>/<name>``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.bytes_read = 0

    def open(self, uri: str) -> IO[bytes]:
        fh = (self.root / uri.rsplit("/", 1)[-1]).open("rb")
        self.bytes_read += os.fstat(fh.fileno()).st_size
        return fh

    def counters(self) -> dict[str, int]:
        return {"bytes_read": self.bytes_read, "bytes_from_remote": 0}

    def stats(self) -> dict[str, Any]:
        return {"source": "local", **self.counters()}


class S3Source:
    """Every read is a GET against object storage (no local copy)."""

    def __init__(self, s3_client: Any) -> None:
        self.s3 = s3_client
        self.bytes_from_remote = 0
        self.reads = 0

    def open(self, uri: str) -> IO[bytes]:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        body = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        self.bytes_from_remote += len(body)
        self.reads += 1
        return io.BytesIO(body)

    def counters(self) -> dict[str, int]:
        return {"reads": self.reads, "bytes_from_remote": self.bytes_from_remote}

    def stats(self) -> dict[str, Any]:
        return {"source": "s3", **self.counters()}


class CachedS3Source:
    """Reads through a :class:`~nuro_ml.features.nvme_cache.ShardCache` (shared by the node's processes)."""

    def __init__(self, cache: Any) -> None:
        self.cache = cache

    def open(self, uri: str) -> IO[bytes]:
        fh: IO[bytes] = self.cache.open(uri)
        return fh

    def counters(self) -> dict[str, int]:
        return {k: v for k, v in self.cache.stats.to_dict().items() if isinstance(v, int)}

    def stats(self) -> dict[str, Any]:
        return {
            "source": "nvme_cache",
            **self.cache.stats.to_dict(),
            "cache_root": str(self.cache.root),
            "cache_capacity_bytes": self.cache.capacity_bytes,
            "cache_used_bytes": self.cache.used_bytes(),
        }


@dataclass(frozen=True)
class ShardSourceConfig:
    """How a process on any node opens the shards: a picklable recipe for a :class:`ShardSource`.

    :param cache_dir: the NVMe shard cache directory, the same path on every node (None with
        ``local_shards``).
    :param cache_bytes: cache capacity per node.
    :param s3_endpoint_url: S3 API endpoint (MinIO, Ceph, a test server); None: boto3's defaults
        (``AWS_ENDPOINT_URL_S3``, then AWS). Credentials always come from the environment.
    :param local_shards: read the shards from this local directory instead (a bare box, a test).
    :param direct: read every shard straight from object storage, bypassing the cache (the
        reference a cache is measured against).
    """

    cache_dir: str | None = None
    cache_bytes: int = 8 << 30
    s3_endpoint_url: str | None = None
    local_shards: str | None = None
    direct: bool = False

    def __post_init__(self) -> None:
        if self.local_shards is None and self.cache_dir is None and not self.direct:
            raise ValueError("ShardSourceConfig: give cache_dir, local_shards or direct=True")
        if self.cache_bytes <= 0:
            raise ValueError(f"ShardSourceConfig: cache_bytes must be positive, got {self.cache_bytes}")

    def s3_client(self) -> Any:
        from nuro_ml.clients.aws import AwsSettings

        return AwsSettings(endpoint_url=self.s3_endpoint_url).client("s3")

    def build(self) -> ShardSource:
        if self.local_shards is not None:
            return LocalSource(self.local_shards)
        if self.direct:
            return S3Source(self.s3_client())
        from nuro_ml.features.nvme_cache import ShardCache

        assert self.cache_dir is not None  # checked in __post_init__
        return CachedS3Source(
            ShardCache(self.cache_dir, capacity_bytes=self.cache_bytes, s3_client=self.s3_client())
        )


def read_shard_table(source: ShardSource, uri: str, columns: Sequence[str] | None = None) -> pa.Table:
    """A shard's table (``columns``, or all), read into memory in one call and decoded there.

    One read into an Arrow buffer: Parquet then decodes from memory, not through Python file
    calls. ``ParquetFile`` decodes that one file directly, in the calling thread; ``pq.read_table``
    goes through the dataset layer and Arrow's thread pool, which costs about 0.4 ms a call more,
    as much again as decoding a 650 KiB shard.
    """
    with source.open(uri) as fh:
        data = fh.read()
    return pq.ParquetFile(pa.BufferReader(data)).read(columns=columns, use_threads=False)


def read_shard(source: ShardSource, uri: str, channels: int) -> tuple[np.ndarray, np.ndarray]:
    return to_arrays(read_shard_table(source, uri), channels)


class ShardLoader:
    """Batches ``(x [B, ticks, channels] float32, y [B] float32)`` of this rank's shards.

    :param shards: manifest entries (``uri`` and ``rows``) of one split.
    :param source: where shard bytes are read from.
    :param channels: input channels per tick (the manifest's ``channels``).
    :param batch_size: windows per batch (per rank).
    :param rank: this worker's rank.
    :param world_size: number of workers sharing the split.
    :param shuffle: permute shards and rows each epoch (off for evaluation: every row once, in order).
    :param seed: base seed of the permutations.
    """

    def __init__(
        self,
        shards: Sequence[dict[str, Any]],
        source: ShardSource,
        *,
        channels: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        seed: int = 0,
    ) -> None:
        if not shards:
            raise ValueError("ShardLoader: the split has no shards")
        if not 0 <= rank < world_size:
            raise ValueError(f"ShardLoader: rank {rank} outside world size {world_size}")
        if batch_size < 1:
            raise ValueError(f"ShardLoader: batch_size must be positive, got {batch_size}")

        self.shards = list(shards)
        self.source = source
        self.channels = channels
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.seed = seed
        # Fewer shards than workers (a small data set): every rank reads every shard and keeps
        # every world_size-th row instead of leaving ranks without data.
        self.striped = len(self.shards) < world_size

    def _assignment(self, epoch: int) -> list[list[int]]:
        order = np.arange(len(self.shards))
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(order)
        if self.striped:
            return [order.tolist() for _ in range(self.world_size)]
        return [order[r :: self.world_size].tolist() for r in range(self.world_size)]

    def _rows(self, index: int, rank: int) -> int:
        rows = int(self.shards[index]["rows"])
        return len(range(rank, rows, self.world_size)) if self.striped else rows

    def batches_per_epoch(self, epoch: int = 0) -> int:
        """Full batches every rank yields in ``epoch`` (the same number on all ranks)."""
        shares = [sum(self._rows(i, rank) for i in mine) for rank, mine in enumerate(self._assignment(epoch))]
        return min(shares) // self.batch_size

    def epoch(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """This rank's batches for ``epoch``; without shuffling, every row once (last batch may be short)."""
        if not self.shuffle:
            return rebatch(self._shards_of(epoch), self.batch_size, drop_last=False)
        return itertools.islice(
            rebatch(self._shards_of(epoch), self.batch_size, drop_last=True), self.batches_per_epoch(epoch)
        )

    def _shards_of(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        # Read lazily: the rows of a shard past the epoch's last batch are never read.
        rng = np.random.default_rng([self.seed, epoch, self.rank, 1])
        for index in self._assignment(epoch)[self.rank]:
            x, y = read_shard(self.source, self.shards[index]["uri"], self.channels)
            if self.striped:
                x, y = x[self.rank :: self.world_size], y[self.rank :: self.world_size]
            if self.shuffle:
                perm = rng.permutation(len(y))
                x, y = x[perm], y[perm]
            yield x, y


def rebatch(
    blocks: Iterable[tuple[np.ndarray, np.ndarray]], batch_size: int, *, drop_last: bool
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Batches of ``batch_size`` rows out of ``(x, y)`` blocks of any sizes, in order.

    A batch inside one block is a view of it; only a batch that spans two blocks is copied
    together. The short last batch comes out unless ``drop_last``.
    """
    if batch_size < 1:
        raise ValueError(f"rebatch: batch_size must be positive, got {batch_size}")
    # Rows left over from the previous block (fewer than a batch).
    carry: tuple[np.ndarray, np.ndarray] | None = None
    for x, y in blocks:
        start = 0
        if carry is not None:
            need = batch_size - len(carry[1])
            x_head, y_head = np.concatenate([carry[0], x[:need]]), np.concatenate([carry[1], y[:need]])
            start = min(need, len(y))
            if len(y_head) < batch_size:
                carry = (x_head, y_head)
                continue
            carry = None
            yield x_head, y_head
        while start + batch_size <= len(y):
            yield x[start : start + batch_size], y[start : start + batch_size]
            start += batch_size
        if start < len(y):
            carry = (x[start:], y[start:])
    if carry is not None and not drop_last:
        yield carry
