"""PySpark Python data source ``mcap``: ``spark.read.format("mcap")``.

Options:

* ``path`` (or ``load(path)``) / ``paths``: files, directories (recursive ``*.mcap``) or globs;
  ``paths`` takes a JSON array or a comma-separated list.
* ``topics``: topics to read. The columns are then the envelope (``file``, ``topic``,
  ``log_time``, ``log_time_ns``, ``publish_time_ns``, ``sequence``) plus the decoded fields of
  the topics' schema (one schema per read). Without it, every message comes raw (``data``).
* ``columns``: keep only these columns; only they are decoded (column pruning). A schema passed
  with ``.schema(...)`` prunes the same way.
* ``partitionBytes``: compressed bytes of chunks per Spark partition (default 128 MiB); large
  files split into chunk ranges using the summary's chunk index.
* ``onDamage``: ``stop`` (default) reads a damaged or truncated file up to the damage, ``fail``
  raises.
* ``verifyCrc``: ``true`` (default) checks each chunk's CRC; a mismatch is damage.
* ``filterPushdown``: ``auto`` (default), ``true`` or ``false``. Pushed filters
  (``topic = ...`` / ``topic IN (...)``, ``log_time_ns`` ranges) drop whole chunks before they are
  read. Spark only pushes filters to Python sources when ``spark.sql.python.filterPushdown.enabled``
  is on, and refuses a reader that implements ``pushFilters`` when it is off. With ``auto`` the
  reader takes filters only when Spark plans it through its filter-pushdown step (the conf is on),
  so ``spark.dataSource.register(McapDataSource)`` in a default session reads, filters and groups;
  :func:`register` also turns the conf on. ``true`` always offers pushdown (and fails where the
  conf is off), ``false`` never does.

Registered the standard way::

    spark.dataSource.register(McapDataSource)
    df = spark.read.format("mcap").option("topics", "/imu").load("/data/raw")
    df.groupBy("topic").count()
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from pyspark.sql.datasource import (
    DataSource,
    DataSourceReader,
    EqualTo,
    Filter,
    GreaterThan,
    GreaterThanOrEqual,
    In,
    InputPartition,
    LessThan,
    LessThanOrEqual,
)
from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema
from pyspark.sql.types import StructType

from nuro_ml.etl import reader as mcap_reader

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import SparkSession

FORMAT_NAME = "mcap"


class McapPartition(InputPartition):
    """One :class:`~nuro_ml.etl.reader.FilePart` (a chunk range of one file, or a whole file)."""

    def __init__(self, part: mcap_reader.FilePart) -> None:
        super().__init__(part)
        self.part = part


class McapDataSource(DataSource):
    """Read MCAP drive logs as DataFrames; see the module docstring for options."""

    @classmethod
    def name(cls) -> str:
        return FORMAT_NAME

    def __init__(self, options: dict[str, str]) -> None:
        super().__init__(options)
        opts = {k.lower(): v for k, v in options.items()}
        raw_paths = mcap_reader.parse_list_option(opts.get("paths")) or []
        if opts.get("path"):
            raw_paths.append(opts["path"])
        if not raw_paths:
            raise ValueError("the mcap data source needs a path: load(path) or option('paths', ...)")
        self.paths = mcap_reader.expand_paths(raw_paths)
        topics = mcap_reader.parse_list_option(opts.get("topics"))
        self.topics = set(topics) if topics else None
        self.columns = mcap_reader.parse_list_option(opts.get("columns"))
        self.part_bytes = int(opts.get("partitionbytes", mcap_reader.DEFAULT_PART_BYTES))
        self.on_damage = opts.get("ondamage", "stop")
        if self.on_damage not in ("stop", "fail"):
            raise ValueError(f"onDamage must be 'stop' or 'fail', not {self.on_damage!r}")
        self.pushdown = opts.get("filterpushdown", "auto").lower()
        if self.pushdown not in ("auto", "true", "false"):
            raise ValueError(f"filterPushdown must be 'auto', 'true' or 'false', not {self.pushdown!r}")
        self.verify_crc = opts.get("verifycrc", "true").lower() == "true"

    def schema(self) -> StructType:
        arrow = mcap_reader.infer_schema(self.paths, self.topics, self.columns)
        return from_arrow_schema(arrow, prefer_timestamp_ntz=False)

    def reader(self, schema: StructType) -> DataSourceReader:
        offer = self.pushdown == "true" or (self.pushdown == "auto" and _planning_pushdown())
        cls = McapPushdownReader if offer else McapReader
        return cls(self, schema)


#: The PySpark worker module that plans a Python data source read with filter pushdown; Spark
#: runs it only when ``spark.sql.python.filterPushdown.enabled`` is on.
_PUSHDOWN_WORKER = "data_source_pushdown_filters"


def _planning_pushdown() -> bool:
    """Whether Spark is creating the reader in its filter-pushdown step (so the conf is on)."""
    frame = sys._getframe(1)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        filename = frame.f_code.co_filename
        if module.endswith(_PUSHDOWN_WORKER) or filename.endswith(f"{_PUSHDOWN_WORKER}.py"):
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


class McapReader(DataSourceReader):
    """Plans chunk-range partitions and decodes them into Arrow record batches."""

    def __init__(self, source: McapDataSource, schema: StructType) -> None:
        self.paths = source.paths
        self.topics = source.topics
        self.part_bytes = source.part_bytes
        self.on_damage = source.on_damage
        self.verify_crc = source.verify_crc
        self.spark_schema = schema
        self.time_range: tuple[int, int] | None = None

    def partitions(self) -> list[InputPartition]:
        parts = mcap_reader.plan(
            self.paths, self.topics, part_bytes=self.part_bytes, time_range=self.time_range
        )
        return [McapPartition(p) for p in parts]

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        part = getattr(partition, "part", None)
        if part is None:
            return iter(())
        arrow_schema = to_arrow_schema(self.spark_schema, timezone="UTC")
        table_reader = mcap_reader.McapTableReader(
            self.topics, arrow_schema, on_damage=self.on_damage, verify_crc=self.verify_crc
        )
        return table_reader.read(part)


class McapPushdownReader(McapReader):
    """:class:`McapReader` that also takes ``topic`` and ``log_time_ns`` filters."""

    def pushFilters(self, filters: list[Filter]) -> Iterable[Filter]:
        lo, hi = -(1 << 63), (1 << 63) - 1
        for f in filters:
            attr = getattr(f, "attribute", None)
            if attr == ("topic",) and isinstance(f, EqualTo | In):
                values = {f.value} if isinstance(f, EqualTo) else set(f.value)
                wanted = {str(v) for v in values}
                self.topics = wanted if self.topics is None else self.topics & wanted
                continue
            if attr == ("log_time_ns",) and isinstance(
                f, GreaterThan | GreaterThanOrEqual | LessThan | LessThanOrEqual
            ):
                value = int(f.value)
                if isinstance(f, GreaterThan | GreaterThanOrEqual):
                    lo = max(lo, value)
                else:
                    hi = min(hi, value + 1)
                self.time_range = (lo, hi)
            # Time filters only prune chunks; Spark still applies them to rows.
            yield f


def register(spark: SparkSession) -> None:
    """Register the ``mcap`` format with a session and enable Python filter pushdown."""
    spark.conf.set("spark.sql.python.filterPushdown.enabled", "true")
    spark.dataSource.register(McapDataSource)
