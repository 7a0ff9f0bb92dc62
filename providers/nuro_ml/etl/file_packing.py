"""Files packed into Spark tasks the way Spark's own file sources pack them.

A Python task costs the driver JVM and the worker tens of milliseconds however little it reads,
so a task per small recording spends a noticeable share of the job on task hand-offs. Spark's
file scans (``FilePartition.maxSplitBytes`` and ``getFilePartitions``) solve the same problem:
files, largest first, fill tasks up to a split size, each file also counting a fixed open cost;
the split size is ``spark.sql.files.maxPartitionBytes`` (128 MiB), lowered so that every core
still gets work (total bytes over ``spark.sql.files.minPartitionNum``, by default the default
parallelism) but not below ``spark.sql.files.openCostInBytes`` (4 MiB). The same settings tune
this job as they tune ``spark.read.parquet``. A file larger than the split size is a task of its
own: recordings are not split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

MAX_PARTITION_BYTES = 128 * 1024 * 1024
OPEN_COST_BYTES = 4 * 1024 * 1024


def max_split_bytes(
    sizes: Sequence[int],
    min_partitions: int,
    *,
    max_partition_bytes: int = MAX_PARTITION_BYTES,
    open_cost: int = OPEN_COST_BYTES,
) -> int:
    """The bytes one task reads at most, as Spark's ``FilePartition.maxSplitBytes`` computes it."""
    total = sum(size + open_cost for size in sizes)
    per_core = total // max(min_partitions, 1)
    return min(max_partition_bytes, max(open_cost, per_core))


def pack(
    items: Sequence[T], size: Callable[[T], int], split_bytes: int, *, open_cost: int = OPEN_COST_BYTES
) -> list[list[T]]:
    """``items`` in tasks of at most ``split_bytes`` (one item may exceed it), largest first.

    A task is closed when the next item would take it past ``split_bytes``; each item also counts
    ``open_cost``, so many tiny files do not pile into one task.
    """
    tasks: list[list[T]] = []
    current: list[T] = []
    filled = 0
    for item in sorted(items, key=size, reverse=True):
        n = size(item)
        if current and filled + n > split_bytes:
            tasks.append(current)
            current, filled = [], 0
        current.append(item)
        filled += n + open_cost
    if current:
        tasks.append(current)
    return tasks


def spark_tasks(
    items: Sequence[T], size: Callable[[T], int], setting: Callable[[str], str | None], parallelism: int
) -> list[list[T]]:
    """``items`` packed by the session's ``spark.sql.files.*`` settings (``setting(key)``: the
    value set, or ``None``) over ``parallelism`` cores."""
    open_cost = conf_bytes(setting("spark.sql.files.openCostInBytes"), OPEN_COST_BYTES)
    split = max_split_bytes(
        [size(item) for item in items],
        int(setting("spark.sql.files.minPartitionNum") or parallelism),
        max_partition_bytes=conf_bytes(setting("spark.sql.files.maxPartitionBytes"), MAX_PARTITION_BYTES),
        open_cost=open_cost,
    )
    return pack(items, size, split, open_cost=open_cost)


def conf_bytes(value: str | None, default: int) -> int:
    """A Spark size setting (``134217728``, ``128m``, ``4mb``, ``1g``) in bytes; unset: ``default``."""
    if not value:
        return default
    # Spark's byte strings: a number, then an optional unit (k, m, g, t, p) and an optional "b".
    text = value.strip().lower().removesuffix("b")
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
    if text[-1:] in units:
        return int(text[:-1]) * units[text[-1]]
    return int(text)
