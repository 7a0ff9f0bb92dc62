"""Low-latency online feature reads from Feast's Redis layout, answering like the SDK.

``FastOnlineReader.get_online_features`` returns the same mapping as
``FeatureStore.get_online_features(...).to_dict()`` for regular feature views: one HMGET per
entity covering every requested view of that entity (Feast stores all views of an entity in
one hash) and asking only for the requested fields, all entities in one pipelined round trip
on a pooled connection, replies parsed by hiredis and each feature's values decoded as one
column straight from the protobuf bytes (``redis_decode``). The registry is read once at
construction; call :meth:`FastOnlineReader.refresh` after an apply.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from nuro_ml.exceptions import FeatureStoreError
from nuro_ml.features import redis_decode
from nuro_ml.features import redis_format as fmt
from nuro_ml.features.resp import RedisEndpoint, RespConnection, RespConnectionError

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView


@dataclass(frozen=True)
class _GroupPlan:
    join_keys: tuple[str, ...]
    key_types: dict[str, str]
    fields_blob: bytes
    nfields: int
    outputs: tuple[str, ...]  # one per HMGET field, in field order
    decoders: tuple[redis_decode.ColumnDecoder, ...]
    command_head: bytes  # ``*N\r\n$5\r\nHMGET\r\n$``: everything before the key's length
    # For a single STRING join key, what surrounds each value's length and bytes in a command:
    # the key's fixed prefix, and the project suffix, CRLF and field list after it.
    string_key_prefix: bytes | None
    string_key_tail: bytes
    string_key_fixed_len: int  # key length less the value's bytes


@dataclass(frozen=True)
class _Plan:
    groups: tuple[_GroupPlan, ...]
    columns: tuple[str, ...]


def _string_key_commands(group: _GroupPlan, values: Sequence[Any], parts: list[bytes]) -> None:
    """Append one HMGET per value to ``parts``, with the key built inline as ``entity_keys`` builds it."""
    head, prefix, tail, fixed = (
        group.command_head,
        group.string_key_prefix,
        group.string_key_tail,
        group.string_key_fixed_len,
    )
    assert prefix is not None
    pack = fmt.U32.pack
    try:
        encoded = [v.encode("utf-8") for v in values]
    except AttributeError:
        bad = next(v for v in values if not isinstance(v, str))
        raise FeatureStoreError(
            f"Join key {group.join_keys[0]!r} is a STRING; entity value {bad!r} is a {type(bad).__name__}"
        ) from None
    parts += [
        b"%b%d\r\n%b%b%b%b" % (head, fixed + len(raw), prefix, pack(len(raw)), raw, tail) for raw in encoded
    ]


class FastOnlineReader:
    """Pipelined Redis reads of Feast features (thread-safe; a small connection pool).

    :param endpoint: the Redis online store.
    :param project: Feast project.
    :param views: registry feature views by name.
    :param services: registry feature services by name -> list of (view name, feature names).
    :param versioned_names: Feast's ``enable_online_feature_view_versioning``.
    :param pool_size: connections kept open for concurrent callers.
    """

    def __init__(
        self,
        endpoint: RedisEndpoint,
        *,
        project: str,
        views: Mapping[str, FeatureView],
        services: Mapping[str, list[tuple[str, list[str]]]],
        versioned_names: bool = False,
        pool_size: int = 4,
        socket_timeout: float = 5.0,
    ) -> None:
        self.endpoint = endpoint
        self.project = project
        self.views = dict(views)
        self.services = dict(services)
        self.versioned_names = versioned_names
        self.socket_timeout = socket_timeout
        self.pool_size = pool_size
        # A plain list under a lock: queue.LifoQueue's condition variables cost more than a read.
        self._idle: list[RespConnection] = []
        self._idle_lock = threading.Lock()
        self._plans: dict[tuple[tuple[str, ...], bool], _Plan] = {}

    @staticmethod
    def _registry_objects(
        store: FeatureStore,
    ) -> tuple[dict[str, FeatureView], dict[str, list[tuple[str, list[str]]]]]:
        store.refresh_registry()
        views = {v.name: v for v in store.list_feature_views()}
        services = {
            s.name: [(p.name, [f.name for f in p.features]) for p in s.feature_view_projections]
            for s in store.list_feature_services()
        }
        return views, services

    @classmethod
    def from_store(cls, store: FeatureStore, connection_string: str, **kwargs: Any) -> FastOnlineReader:
        views, services = cls._registry_objects(store)
        return cls(
            RedisEndpoint.from_feast(connection_string),
            project=store.project,
            views=views,
            services=services,
            versioned_names=store.config.registry.enable_online_feature_view_versioning,
            **kwargs,
        )

    def close(self) -> None:
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _acquire(self) -> RespConnection:
        with self._idle_lock:
            if self._idle:
                return self._idle.pop()
        return RespConnection(self.endpoint, socket_timeout=self.socket_timeout)

    def _release(self, conn: RespConnection) -> None:
        with self._idle_lock:
            if len(self._idle) < self.pool_size:
                self._idle.append(conn)
                return
        conn.close()

    # ------------------------------------------------------------------ planning

    def _resolve(self, features: Sequence[str] | str) -> list[tuple[str, list[str]]]:
        if isinstance(features, str):
            if features not in self.services:
                raise FeatureStoreError(
                    f"Feature service {features!r} is not in the registry (known: {sorted(self.services)})"
                )
            return [(view, list(names)) for view, names in self.services[features]]
        grouped: dict[str, list[str]] = {}
        for ref in features:
            view, sep, feature = ref.partition(":")
            if not sep:
                raise FeatureStoreError(f"Feature reference {ref!r} is not of the form '<view>:<feature>'")
            grouped.setdefault(view, []).append(feature)
        return list(grouped.items())

    def _plan(self, features: Sequence[str] | str, full_feature_names: bool) -> _Plan:
        cache_key = ((features,) if isinstance(features, str) else tuple(features), full_feature_names)
        plan = self._plans.get(cache_key)
        if plan is not None:
            return plan
        from feast.infra.online_stores.helpers import compute_versioned_name

        groups: dict[tuple[str, ...], dict[str, Any]] = {}
        columns: list[str] = []
        for view_name, names in self._resolve(features):
            view = self.views.get(view_name)
            if view is None:
                raise FeatureStoreError(
                    f"Feature view {view_name!r} is not a regular feature view in the registry; the fast "
                    "reader serves materialized views only (use FeatureStore.get_online_features for "
                    "on-demand views)"
                )
            types = {f.name: f.dtype.to_value_type().name for f in view.features}
            unknown = [n for n in names if n not in types]
            if unknown:
                raise FeatureStoreError(f"Feature view {view_name!r} has no feature(s) {unknown}")
            key_types = {c.name: c.dtype.to_value_type().name for c in view.entity_columns}
            join_keys = tuple(sorted(key_types))
            group = groups.setdefault(
                join_keys, {"key_types": key_types, "fields": [], "outputs": [], "decoders": []}
            )
            store_name = compute_versioned_name(view, self.versioned_names)
            outputs = [f"{view_name}__{n}" if full_feature_names else n for n in names]
            group["outputs"].extend(outputs)
            group["decoders"].extend(redis_decode.column_decoder_for(types[n]) for n in names)
            group["fields"].extend(fmt.field_hash(store_name, n) for n in names)
            columns.extend(outputs)
        plans = []
        for join_keys, g in groups.items():
            blob = b"".join(b"$%d\r\n%s\r\n" % (len(f), f) for f in g["fields"])
            nfields = len(g["fields"])
            single_string = len(join_keys) == 1 and g["key_types"][join_keys[0]] == "STRING"
            plans.append(
                _GroupPlan(
                    join_keys,
                    g["key_types"],
                    blob,
                    nfields,
                    tuple(g["outputs"]),
                    tuple(g["decoders"]),
                    b"*%d\r\n$5\r\nHMGET\r\n$" % (nfields + 2),
                    fmt.string_key_prefix(join_keys[0]) if single_string else None,
                    self.project.encode("utf-8") + b"\r\n" + blob,
                    len(fmt.string_key_prefix(join_keys[0])) + 4 + len(self.project.encode("utf-8")),
                )
            )
        plan = _Plan(tuple(plans), tuple(columns))
        self._plans[cache_key] = plan
        return plan

    # ------------------------------------------------------------------ reading

    def get_online_features(
        self,
        *,
        features: Sequence[str] | str,
        entity_rows: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]],
        full_feature_names: bool = False,
    ) -> dict[str, list[Any]]:
        """Feature values for each entity row: ``{join key: [...], feature: [...], ...}``.

        :param features: ``["view:feature", ...]`` or a feature service name.
        :param entity_rows: rows as dicts, or columns as a dict of lists.
        :param full_feature_names: name outputs ``<view>__<feature>``.
        """
        plan = self._plan(features, full_feature_names)
        if isinstance(entity_rows, Mapping):
            columns_in = {k: list(v) for k, v in entity_rows.items()}
            n = len(next(iter(columns_in.values()))) if columns_in else 0
        else:
            n = len(entity_rows)
            names = list(entity_rows[0].keys()) if n else []
            columns_in = {k: [row[k] for row in entity_rows] for k in names}
        out: dict[str, list[Any]] = dict(columns_in)
        payload_parts: list[bytes] = []
        for group in plan.groups:
            missing = [k for k in group.join_keys if k not in columns_in]
            if missing:
                raise FeatureStoreError(f"Entity rows lack join key(s) {missing}")
            if group.string_key_prefix is not None:
                _string_key_commands(group, columns_in[group.join_keys[0]], payload_parts)
            else:
                keys = fmt.entity_keys(
                    {k: pa.array(columns_in[k]) for k in group.join_keys}, group.key_types, self.project
                )
                tail = b"\r\n" + group.fields_blob
                for k in keys:
                    payload_parts += (group.command_head, b"%d\r\n" % len(k), k, tail)
        replies = self._execute(b"".join(payload_parts), n * len(plan.groups))
        for i, group in enumerate(plan.groups):
            # One tuple per requested field across all entities: each is decoded as a column.
            fields = list(zip(*replies[i * n : (i + 1) * n], strict=True)) if n else [()] * group.nfields
            for name, decode, raws in zip(group.outputs, group.decoders, fields, strict=True):
                out[name] = decode(raws)
        return out

    def _execute(self, payload: bytes, count: int) -> list[Any]:
        if count == 0:
            return []
        last: Exception | None = None
        for _ in range(2):
            conn = self._acquire()
            try:
                replies = conn.execute(payload, count)
            except RespConnectionError as exc:
                # A pooled connection may have been closed by the server; one fresh try.
                last = exc
                continue
            finally:
                self._release(conn)
            for r in replies:
                if isinstance(r, Exception):
                    raise FeatureStoreError(f"Redis at {self.endpoint.address} rejected a feature read: {r}")
            return replies
        raise FeatureStoreError(f"Reading features from Redis at {self.endpoint.address} failed: {last}")

    def refresh(self, store: FeatureStore) -> None:
        """Reload views and services from the registry (after an apply)."""
        self.views, self.services = self._registry_objects(store)
        self._plans.clear()
