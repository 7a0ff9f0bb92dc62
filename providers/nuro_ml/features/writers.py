"""Write prepared Arrow rows of a feature view into the online store.

Input tables carry the view's join keys and features under their Feast names, plus
``__event_ts`` (and ``__created_ts`` when the source has one), already reduced to the latest
row per entity. Both writers keep the newest event per entity: a row older than what the
store holds is skipped (counted as stale); a row with the same event time overwrites, so a
corrected ETL rerun reaches the online store.

:class:`RedisArrowWriter` produces Feast's exact Redis layout straight from Arrow columns and
streams it through pipelines; :class:`FeastProviderWriter` goes through Feast's provider API
and serves every other online store (SQLite by default).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import hiredis
import numpy as np
import pyarrow as pa

from nuro_ml.exceptions import FeatureStoreError
from nuro_ml.features import redis_format as fmt
from nuro_ml.features.resp import RedisEndpoint, RespConnection, RespConnectionError

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView

log = logging.getLogger(__name__)

EVENT_TS = "__event_ts"
CREATED_TS = "__created_ts"


@dataclass
class WriteStats:
    rows: int = 0
    stale: int = 0
    retries: int = 0


class OnlineWriter(Protocol):
    """What the materializer needs from an online-store writer."""

    name: str

    def write(self, view: FeatureView, table: pa.Table) -> WriteStats: ...

    def close(self) -> None: ...


def _micros(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    arr = column.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.int64)


def _view_types(view: FeatureView) -> tuple[dict[str, str], dict[str, str]]:
    keys = {c.name: c.dtype.to_value_type().name for c in view.entity_columns}
    feats = {f.name: f.dtype.to_value_type().name for f in view.features}
    return keys, feats


class _Progress:
    def __init__(self, what: str, total: int, every_s: float = 5.0) -> None:
        self.what = what
        self.total = total
        self.every_s = every_s
        self.started = time.monotonic()
        self.last = self.started

    def update(self, done: int, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last >= self.every_s:
            self.last = now
            rate = done / max(now - self.started, 1e-9)
            log.info("%s: %d/%d rows (%.0f rows/s)", self.what, done, self.total, rate)


class RedisArrowWriter:
    """Bulk writer into a Redis online store in Feast's exact key/value format.

    :param endpoint: the Redis server (from Feast's connection string).
    :param project: Feast project (suffix of every key).
    :param key_ttl_seconds: EXPIRE each written key, as Feast's ``key_ttl_seconds`` does.
    :param batch_rows: rows per pipeline round trip; bounds memory and request size.
    :param max_attempts: tries per batch before giving up (connection errors and timeouts).
    :param backoff_s: first retry delay, doubled per attempt.
    :param socket_timeout: seconds to wait for Redis before the attempt counts as failed.
    :param versioned_names: use Feast's versioned view names (registry option).
    """

    name = "redis"

    def __init__(
        self,
        endpoint: RedisEndpoint,
        *,
        project: str,
        key_ttl_seconds: int | None = None,
        batch_rows: int = 5000,
        max_attempts: int = 5,
        backoff_s: float = 0.25,
        socket_timeout: float = 10.0,
        versioned_names: bool = False,
    ) -> None:
        self.endpoint = endpoint
        self.project = project
        self.key_ttl_seconds = key_ttl_seconds
        self.batch_rows = batch_rows
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.versioned_names = versioned_names
        self.conn = RespConnection(endpoint, socket_timeout=socket_timeout)

    def close(self) -> None:
        self.conn.close()

    def _store_name(self, view: FeatureView) -> str:
        from feast.infra.online_stores.helpers import compute_versioned_name

        return compute_versioned_name(view, self.versioned_names)

    def write(self, view: FeatureView, table: pa.Table) -> WriteStats:
        stats = WriteStats()
        total = table.num_rows
        if total == 0:
            return stats
        key_types, feature_types = _view_types(view)
        store_name = self._store_name(view)
        hashes = [fmt.field_hash(store_name, f) for f in feature_types]
        ts_name = fmt.ts_field(store_name)
        progress = _Progress(f"Feature view {view.name} -> Redis {self.endpoint.address}", total)
        for offset in range(0, total, self.batch_rows):
            batch = table.slice(offset, self.batch_rows).combine_chunks()
            keys = fmt.entity_keys({k: batch.column(k) for k in key_types}, key_types, self.project)
            micros = _micros(batch.column(EVENT_TS))
            values = [fmt.encode_values(batch.column(f), t) for f, t in feature_types.items()]
            commands = self._commands(keys, hashes, values, ts_name, fmt.encode_timestamps(micros))
            written, stale = self._send_batch(view.name, keys, ts_name, micros, commands, offset, total, stats)
            stats.rows += written
            stats.stale += stale
            progress.update(offset + batch.num_rows)
        progress.update(total, force=True)
        return stats

    def _commands(
        self,
        keys: list[bytes],
        hashes: list[bytes],
        values: list[list[bytes]],
        ts_name: bytes,
        ts_values: list[bytes],
    ) -> list[bytes]:
        head = b"*%d\r\n$4\r\nHSET\r\n" % (2 + 2 * (len(hashes) + 1))
        key_parts = [b"$%d\r\n%s\r\n" % (len(k), k) for k in keys]
        columns = []
        for h, vals in zip(hashes, values, strict=True):
            field_part = b"$%d\r\n%s\r\n" % (len(h), h)
            columns.append([b"%s$%d\r\n%s\r\n" % (field_part, len(v), v) for v in vals])
        ts_part = b"$%d\r\n%s\r\n" % (len(ts_name), ts_name)
        columns.append([b"%s$%d\r\n%s\r\n" % (ts_part, len(v), v) for v in ts_values])
        cmds = [head + b"".join(parts) for parts in zip(key_parts, *columns, strict=True)]
        if self.key_ttl_seconds:
            ttl = str(int(self.key_ttl_seconds)).encode()
            expire_tail = b"$%d\r\n%s\r\n" % (len(ttl), ttl)
            cmds = [
                c + b"*3\r\n$6\r\nEXPIRE\r\n" + kp + expire_tail for c, kp in zip(cmds, key_parts, strict=True)
            ]
        return cmds

    def _send_batch(
        self,
        view_name: str,
        keys: list[bytes],
        ts_name: bytes,
        micros: np.ndarray,
        commands: list[bytes],
        offset: int,
        total: int,
        stats: WriteStats,
    ) -> tuple[int, int]:
        per_row = 2 if self.key_ttl_seconds else 1
        read_ts = b"".join(fmt.resp_command(b"HMGET", k, ts_name) for k in keys)
        attempt = 0
        while True:
            attempt += 1
            try:
                existing = self.conn.execute(read_ts, len(keys))
                new_ns = micros * 1000
                keep = [
                    i
                    for i, reply in enumerate(existing)
                    if reply[0] is None or fmt.decode_timestamp_nanos(reply[0]) <= int(new_ns[i])
                ]
                payload = b"".join(commands[i] for i in keep)
                replies = self.conn.execute(payload, len(keep) * per_row) if keep else []
            except RespConnectionError as exc:
                if attempt >= self.max_attempts:
                    raise FeatureStoreError(
                        f"Writing feature view {view_name!r} to Redis at {self.endpoint.address} failed after "
                        f"{attempt} attempts at rows {offset}-{offset + len(keys)} of {total} "
                        f"({stats.rows} rows were written before): {exc}"
                    ) from exc
                delay = self.backoff_s * 2 ** (attempt - 1)
                stats.retries += 1
                log.warning(
                    "Redis write of feature view %s rows %d-%d failed (attempt %d/%d), retrying in %.2fs: %s",
                    view_name, offset, offset + len(keys), attempt, self.max_attempts, delay, exc,
                )
                time.sleep(delay)
                continue
            errors = [r for r in replies if isinstance(r, hiredis.ReplyError)]
            if errors:
                raise FeatureStoreError(
                    f"Redis at {self.endpoint.address} rejected writes of feature view {view_name!r} "
                    f"(rows {offset}-{offset + len(keys)}): {errors[0]}"
                )
            return len(keep), len(keys) - len(keep)


class FeastProviderWriter:
    """Writes through Feast's provider (any online store), keeping the newest event per entity."""

    name = "feast"

    def __init__(self, store: FeatureStore, *, batch_rows: int = 2000) -> None:
        self.store = store
        self.batch_rows = batch_rows

    def close(self) -> None:
        return None

    def write(self, view: FeatureView, table: pa.Table) -> WriteStats:
        from feast.utils import _convert_arrow_to_proto

        stats = WriteStats()
        if table.num_rows == 0:
            return stats
        provider = self.store._get_provider()
        config = self.store.config
        source = view.batch_source
        assert source is not None
        renames = {EVENT_TS: source.timestamp_field}
        if source.created_timestamp_column:
            renames[CREATED_TS] = source.created_timestamp_column
        table = table.rename_columns([renames.get(c, c) for c in table.column_names])
        join_keys = {c.name: c.dtype.to_value_type() for c in view.entity_columns}
        first_feature = [view.features[0].name]
        progress = _Progress(f"Feature view {view.name} -> {config.online_store.type}", table.num_rows)
        try:
            for offset in range(0, table.num_rows, self.batch_rows):
                batch = table.slice(offset, self.batch_rows).combine_chunks()
                rows = _convert_arrow_to_proto(batch, view, join_keys)
                current = provider.online_read(config, view, [r[0] for r in rows], first_feature)
                fresh = [
                    row
                    for row, (stored_ts, _) in zip(rows, current, strict=True)
                    if stored_ts is None or _as_utc(stored_ts) <= _as_utc(row[2])
                ]
                if fresh:
                    provider.online_write_batch(config, view, fresh, None)
                stats.rows += len(fresh)
                stats.stale += len(rows) - len(fresh)
                progress.update(offset + batch.num_rows)
        except FeatureStoreError:
            raise
        except Exception as exc:
            raise FeatureStoreError(
                f"Writing feature view {view.name!r} to the {config.online_store.type} online store failed "
                f"after {stats.rows} rows: {exc}"
            ) from exc
        progress.update(table.num_rows, force=True)
        return stats


def _as_utc(ts: Any) -> Any:
    from datetime import UTC

    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
