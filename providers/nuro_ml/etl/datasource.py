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
* ``filterPushdown``: ``true`` (default) accepts ``topic = ...`` / ``topic IN (...)`` filters,
  which drop whole chunks before they are read, and uses ``log_time_ns`` ranges to skip chunks.
  Spark refuses readers that push filters unless ``spark.sql.python.filterPushdown.enabled`` is
  on; :func:`register` turns it on, or pass ``false`` here.
"""

from __future__ import annotations

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
        self.pushdown = opts.get("filterpushdown", "true").lower() == "true"
        self.verify_crc = opts.get("verifycrc", "true").lower() == "true"

    def schema(self) -> StructType:
        arrow = mcap_reader.infer_schema(self.paths, self.topics, self.columns)
        return from_arrow_schema(arrow, prefer_timestamp_ntz=False)

    def reader(self, schema: StructType) -> DataSourceReader:
        cls = McapPushdownReader if self.pushdown else McapReader
        return cls(self, schema)


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
