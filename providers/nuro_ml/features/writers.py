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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pyarrow as pa

from nuro_ml.exceptions import FeatureStoreError
from nuro_ml.features import redis_format as fmt
from nuro_ml.features.resp import RedisEndpoint, RespConnection, RespConnectionError
from nuro_ml.progress import Progress

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
    """What the materializer needs from an online-store writer.

    ``write`` takes views that share join keys and event-time columns, and one table holding
    all their features; it returns per-view statistics.
    """

    name: str

    def unsupported(self, view: FeatureView) -> str | None:
        """Why this writer cannot encode ``view`` exactly as Feast does (None: it can)."""
        ...

    def write(self, views: Sequence[FeatureView], table: pa.Table) -> dict[str, WriteStats]: ...

    def close(self) -> None: ...


def _micros(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    arr = column.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.int64)


@dataclass
class _ViewLayout:
    """How one view's fields are encoded in Redis."""

    name: str
    ts_part: bytes  # RESP bulk string of the ``_ts:<view>`` field name
    double_hashes: list[bytes]
    double_features: list[str]
    other: list[tuple[bytes, str, str]]  # (field part, feature, value type)
    nfields: int


def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


class RedisArrowWriter:
    """Bulk writer into a Redis online store in Feast's exact key/value format.

    Views that share an entity are written with one HSET per entity (Feast keeps all views of
    an entity in one hash), after one HMGET of their ``_ts`` fields decides, per view, whether
    the stored row is newer.

    :param endpoint: the Redis server (from Feast's connection string).
    :param project: Feast project (suffix of every key).
    :param key_ttl_seconds: EXPIRE each written key, as Feast's ``key_ttl_seconds`` does.
    :param batch_rows: rows per pipeline round trip; bounds memory and request size.
    :param max_attempts: tries per batch before giving up (connection errors and timeouts).
    :param backoff_s: first retry delay, doubled per attempt.
    :param socket_timeout: seconds to wait for Redis before the attempt counts as failed.
    :param versioned_names: use Feast's versioned view names (registry option).
    :param entity_key_serialization_version: the repository's; the fast path encodes version 3.
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
        entity_key_serialization_version: int = 3,
    ) -> None:
        self.entity_key_serialization_version = entity_key_serialization_version
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

    def unsupported(self, view: FeatureView) -> str | None:
        if self.entity_key_serialization_version != 3:
            return f"entity key serialization version {self.entity_key_serialization_version} (encodes 3)"
        for column in view.entity_columns:
            vt = column.dtype.to_value_type().name
            if vt not in fmt.ENTITY_KEY_TYPES:
                return f"join key {column.name!r} of type {vt}"
        for feature in view.features:
            vt = feature.dtype.to_value_type().name
            if vt not in fmt.feature_value_types():
                return f"feature {feature.name!r} of type {vt}"
        return None

    def _layout(self, view: FeatureView) -> _ViewLayout:
        from feast.infra.online_stores.helpers import compute_versioned_name

        store_name = compute_versioned_name(view, self.versioned_names)
        doubles, double_hashes, other = [], [], []
        for f in view.features:
            vt = f.dtype.to_value_type().name
            h = fmt.field_hash(store_name, f.name)
            if vt == "DOUBLE":
                doubles.append(f.name)
                double_hashes.append(h)
            else:
                other.append((_bulk(h), f.name, vt))
        return _ViewLayout(
            store_name, _bulk(fmt.ts_field(store_name)), double_hashes, doubles, other, len(view.features) + 1
        )

    def write(self, views: Sequence[FeatureView], table: pa.Table) -> dict[str, WriteStats]:
        stats = {v.name: WriteStats() for v in views}
        total = table.num_rows
        if total == 0 or not views:
            return stats
        key_types = {c.name: c.dtype.to_value_type().name for c in views[0].entity_columns}
        layouts = [self._layout(v) for v in views]
        names = ", ".join(v.name for v in views)
        progress = Progress(f"Feature views {names} -> Redis {self.endpoint.address}", total, unit="rows")
        for offset in range(0, total, self.batch_rows):
            batch = table.slice(offset, self.batch_rows).combine_chunks()
            keys = fmt.entity_keys({k: batch.column(k) for k in key_types}, key_types, self.project)
            key_parts = [b"$%d\r\n%s\r\n" % (len(k), k) for k in keys]
            micros = _micros(batch.column(EVENT_TS))
            ts_parts = [b"$%d\r\n%s\r\n" % (len(t), t) for t in fmt.encode_timestamps(micros)]
            chunks = [self._view_chunks(layout, batch, ts_parts) for layout in layouts]
            kept = self._send_batch(names, layouts, key_parts, micros, chunks, offset, total, stats)
            for view, n in zip(views, kept, strict=True):
                stats[view.name].rows += n
                stats[view.name].stale += batch.num_rows - n
            progress.update(offset + batch.num_rows)
        progress.finish(stale=sum(s.stale for s in stats.values()))
        return stats

    def _view_chunks(self, layout: _ViewLayout, batch: pa.Table, ts_parts: list[bytes]) -> list[bytes]:
        """Per row: the view's ``field value`` pairs including its ``_ts`` field, RESP-encoded."""
        n = batch.num_rows
        columns: list[list[bytes]] = []
        if layout.double_features:
            data = [fmt.float_column(batch.column(f)) for f in layout.double_features]
            blob, width, bad = fmt.fixed_field_block(layout.double_hashes, data)
            block = [blob[i * width : (i + 1) * width] for i in range(n)]
            if bad.any():
                hashes = [_bulk(h) for h in layout.double_hashes]
                encoded = [fmt.encode_values(batch.column(f), "DOUBLE") for f in layout.double_features]
                for i in np.flatnonzero(bad).tolist():
                    block[i] = b"".join(h + _bulk(vals[i]) for h, vals in zip(hashes, encoded, strict=True))
            columns.append(block)
        for field_part, feature, vt in layout.other:
            columns.append([field_part + _bulk(v) for v in fmt.encode_values(batch.column(feature), vt)])
        ts_field = layout.ts_part
        return [b"".join((*parts, ts_field, ts)) for *parts, ts in zip(*columns, ts_parts, strict=True)]

    def _send_batch(
        self,
        names: str,
        layouts: list[_ViewLayout],
        key_parts: list[bytes],
        micros: np.ndarray,
        chunks: list[list[bytes]],
        offset: int,
        total: int,
        stats: dict[str, WriteStats],
    ) -> list[int]:
        nviews = len(layouts)
        read_head = b"*%d\r\n$5\r\nHMGET\r\n" % (2 + nviews)
        ts_fields = b"".join(layout.ts_part for layout in layouts)
        read_ts = b"".join([read_head + kp + ts_fields for kp in key_parts])
        full_head = b"*%d\r\n$4\r\nHSET\r\n" % (2 + 2 * sum(layout.nfields for layout in layouts))
        expire = b""
        if self.key_ttl_seconds:
            expire = _bulk(str(int(self.key_ttl_seconds)).encode())
        attempt = 0
        while True:
            attempt += 1
            try:
                existing = self.conn.execute(read_ts, len(key_parts))
                commands, kept = self._commands(
                    existing, micros, layouts, key_parts, chunks, full_head, expire
                )
                per_row = 2 if expire else 1
                errors = (
                    self.conn.execute_status(b"".join(commands), len(commands) * per_row) if commands else []
                )
            except RespConnectionError as exc:
                if attempt >= self.max_attempts:
                    written = sum(s.rows for s in stats.values())
                    raise FeatureStoreError(
                        f"Writing feature view(s) {names} to Redis at {self.endpoint.address} failed after "
                        f"{attempt} attempts at rows {offset}-{offset + len(key_parts)} of {total} "
                        f"({written} rows were written before): {exc}"
                    ) from exc
                delay = self.backoff_s * 2 ** (attempt - 1)
                for s in stats.values():
                    s.retries += 1
                log.warning(
                    "Redis write of %s rows %d-%d failed (attempt %d/%d), retrying in %.2fs: %s",
                    names,
                    offset,
                    offset + len(key_parts),
                    attempt,
                    self.max_attempts,
                    delay,
                    exc,
                )
                time.sleep(delay)
                continue
            if errors:
                raise FeatureStoreError(
                    f"Redis at {self.endpoint.address} rejected writes of {names} "
                    f"(rows {offset}-{offset + len(key_parts)}): {errors[0]}"
                )
            return kept

    @staticmethod
    def _commands(
        existing: list[list[bytes | None]],
        micros: np.ndarray,
        layouts: list[_ViewLayout],
        key_parts: list[bytes],
        chunks: list[list[bytes]],
        full_head: bytes,
        expire: bytes,
    ) -> tuple[list[bytes], list[int]]:
        """HSET (+EXPIRE) per row for the views whose stored event time is not newer."""
        nviews = len(layouts)
        nothing_stored = [None] * nviews
        if not expire and all(stored == nothing_stored for stored in existing):
            # First load of these entities (the common case): every row, every view.
            commands = [
                b"".join((full_head, kp, *parts)) for kp, *parts in zip(key_parts, *chunks, strict=True)
            ]
            return commands, [len(key_parts)] * nviews
        kept = [0] * nviews
        commands = []
        decode = fmt.decode_timestamp_nanos
        for i, stored in enumerate(existing):
            if all(s is None for s in stored):
                parts = [chunk[i] for chunk in chunks]
                head = full_head
                for v in range(nviews):
                    kept[v] += 1
            else:
                new_ns = int(micros[i]) * 1000
                parts = []
                nfields = 0
                for v in range(nviews):
                    s = stored[v]
                    if s is None or (decode(s) or 0) <= new_ns:
                        parts.append(chunks[v][i])
                        nfields += layouts[v].nfields
                        kept[v] += 1
                if not parts:
                    continue
                head = b"*%d\r\n$4\r\nHSET\r\n" % (2 + 2 * nfields)
            command = b"".join((head, key_parts[i], *parts))
            if expire:
                command += b"*3\r\n$6\r\nEXPIRE\r\n" + key_parts[i] + expire
            commands.append(command)
        return commands, kept


class FeastProviderWriter:
    """Writes through Feast's provider (any online store), keeping the newest event per entity."""

    name = "feast"

    def __init__(self, store: FeatureStore, *, batch_rows: int = 2000) -> None:
        self.store = store
        self.batch_rows = batch_rows

    def close(self) -> None:
        return None

    def unsupported(self, view: FeatureView) -> str | None:
        return None

    def write(self, views: Sequence[FeatureView], table: pa.Table) -> dict[str, WriteStats]:
        return {view.name: self._write_one(view, table) for view in views}

    def _write_one(self, view: FeatureView, table: pa.Table) -> WriteStats:
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
        progress = Progress(
            f"Feature view {view.name} -> {config.online_store.type}", table.num_rows, unit="rows"
        )
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
        progress.finish(stale=stats.stale)
        return stats


def _as_utc(ts: Any) -> Any:
    from datetime import UTC

    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
