"""PySpark streaming data source ``redis_stream``: ``spark.readStream.format("redis_stream")``.

Reads the entries of one Redis Stream in id order. An offset is a stream entry id
(``{"id": "<ms>-<seq>"}``): a micro-batch reads the entries after its start id up to and including
its end id, so replaying a batch from Spark's checkpoint reads exactly the same entries, and a
query restarted from its checkpoint neither skips nor repeats any (entries are never trimmed by
the reader; trim the stream with ``MAXLEN``/``MINID`` on the producer side).

Options:

* ``url``: ``redis://host:port/db`` (required); a password goes in the URL's user-info part and is
  never logged.
* ``stream``: the stream key (required).
* ``startingId``: where a new query starts: ``0-0`` (default, the whole stream) or ``$`` (entries
  added after the query started).
* ``maxRecordsPerBatch``: at most this many entries per micro-batch (default 100000); a trigger
  that reads everything available (``availableNow``) ignores it.

Rows: ``id`` (the entry id), ``added_at`` (the time Redis took the entry, from its id),
``fields`` (the entry's field/value pairs as ``map<string,string>``).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition
from pyspark.sql.streaming.datasource import SupportsTriggerAvailableNow
from pyspark.sql.types import MapType, StringType, StructField, StructType, TimestampType

if TYPE_CHECKING:
    import redis

FORMAT_NAME = "redis_stream"
ZERO_ID = "0-0"
DEFAULT_MAX_RECORDS = 100_000
#: Entries fetched per XRANGE call while reading a batch.
_PAGE = 10_000

SCHEMA = StructType(
    [
        StructField("id", StringType(), False),
        StructField("added_at", TimestampType(), False),
        StructField("fields", MapType(StringType(), StringType()), False),
    ]
)


def parse_id(entry_id: str) -> tuple[int, int]:
    """``"<ms>-<seq>"`` as a pair that orders like Redis orders ids."""
    ms, _, seq = entry_id.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        raise ValueError(f"{entry_id!r} is not a Redis Stream entry id (<ms>-<seq>)") from None


def added_at(entry_id: str) -> datetime:
    """When Redis added the entry (auto-generated ids carry the server's clock in ms)."""
    return datetime.fromtimestamp(parse_id(entry_id)[0] / 1000, tz=UTC)


Entry = tuple[str, dict[str, str]]


def _client(url: str) -> redis.Redis:
    import redis

    return redis.Redis.from_url(url, decode_responses=True)


def _xrange(url: str, stream: str, **kwargs: Any) -> list[Entry]:
    """XRANGE (a sync client returns a list; redis-py's union type also allows an awaitable)."""
    return cast(list[Entry], _client(url).xrange(stream, **kwargs))


class RedisRange(InputPartition):
    """Entries with ``start < id <= end``."""

    def __init__(self, start: str, end: str) -> None:
        super().__init__((start, end))
        self.start = start
        self.end = end


class RedisStreamDataSource(DataSource):
    """Stream the entries of a Redis Stream; see the module docstring for options."""

    @classmethod
    def name(cls) -> str:
        return FORMAT_NAME

    def __init__(self, options: dict[str, str]) -> None:
        super().__init__(options)
        opts = {k.lower(): v for k, v in options.items()}
        missing = [name for name in ("url", "stream") if not opts.get(name)]
        if missing:
            raise ValueError(f"the redis_stream source needs option(s) {', '.join(missing)}")
        self.url = opts["url"]
        self.stream = opts["stream"]
        self.starting_id = opts.get("startingid", ZERO_ID)
        if self.starting_id != "$":
            parse_id(self.starting_id)
        try:
            self.max_records = int(opts.get("maxrecordsperbatch", DEFAULT_MAX_RECORDS))
        except ValueError:
            raise ValueError(
                f"maxRecordsPerBatch must be a whole number, not {opts['maxrecordsperbatch']!r}"
            ) from None
        if self.max_records < 1:
            raise ValueError(f"maxRecordsPerBatch must be at least 1, not {self.max_records}")

    def schema(self) -> StructType:
        return SCHEMA

    def streamReader(self, schema: StructType) -> DataSourceStreamReader:
        return RedisStreamReader(self)


class RedisStreamReader(DataSourceStreamReader, SupportsTriggerAvailableNow):
    """Plans one partition per micro-batch over an id range and reads it with XRANGE."""

    def __init__(self, source: RedisStreamDataSource) -> None:
        self.url = source.url
        self.stream = source.stream
        self.starting_id = source.starting_id
        self.max_records = source.max_records
        #: Last id an ``availableNow`` run stops at.
        self._target: str | None = None

    def _last_id(self) -> str:
        last = cast(list[Entry], _client(self.url).xrevrange(self.stream, count=1))
        return last[0][0] if last else ZERO_ID

    def initialOffset(self) -> dict[str, Any]:
        return {"id": self._last_id() if self.starting_id == "$" else self.starting_id}

    def getDefaultReadLimit(self) -> Any:
        from pyspark.sql.streaming.datasource import ReadMaxRows

        return ReadMaxRows(self.max_records)

    def prepareForTriggerAvailableNow(self) -> None:
        self._target = self._last_id()

    def latestOffset(self, start: dict[str, Any], limit: Any) -> dict[str, Any]:
        from pyspark.sql.streaming.datasource import ReadMaxRows

        last = self._target or "+"
        if isinstance(limit, ReadMaxRows):
            ahead = _xrange(self.url, self.stream, min=f"({start['id']}", max=last, count=limit.max_rows)
            return {"id": ahead[-1][0]} if ahead else start
        if last == "+":
            last = self._last_id()
        return {"id": last} if parse_id(last) > parse_id(start["id"]) else start

    def reportLatestOffset(self) -> dict[str, Any] | None:
        return {"id": self._last_id()}

    def partitions(self, start: dict[str, Any], end: dict[str, Any]) -> list[InputPartition]:
        if parse_id(end["id"]) <= parse_id(start["id"]):
            return []
        return [RedisRange(start["id"], end["id"])]

    def read(self, partition: InputPartition) -> Iterator[tuple[str, datetime, dict[str, str]]]:
        assert isinstance(partition, RedisRange)
        low = f"({partition.start}"
        while True:
            page = _xrange(self.url, self.stream, min=low, max=partition.end, count=_PAGE)
            for entry_id, fields in page:
                yield entry_id, added_at(entry_id), dict(fields)
            if len(page) < _PAGE:
                return
            low = f"({page[-1][0]}"

    def commit(self, end: dict[str, Any]) -> None:
        # Entries stay in the stream: other consumers and a replay from an older checkpoint
        # may still need them. Producers bound the stream's length.
        return None
