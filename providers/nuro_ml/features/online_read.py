"""Low-latency online feature reads from Feast's Redis layout, answering like the SDK.

``FastOnlineReader.get_online_features`` returns the same mapping as
``FeatureStore.get_online_features(...).to_dict()`` for regular feature views: one HMGET per
entity covering every requested view of that entity (Feast stores all views of an entity in
one hash), all entities in one pipelined round trip, replies parsed by hiredis and values
decoded straight from the protobuf bytes. The registry is read once at construction; call
:meth:`FastOnlineReader.refresh` after an apply.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from nuro_ml.exceptions import FeatureStoreError
from nuro_ml.features import redis_format as fmt
from nuro_ml.features.resp import RedisEndpoint, RespConnection, RespConnectionError

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView


@dataclass(frozen=True)
class _ViewRead:
    outputs: tuple[str, ...]
    decoders: tuple[Callable[[bytes | None], Any], ...]
    first_field: int  # index of the view's first field in the group's HMGET field list


@dataclass(frozen=True)
class _GroupPlan:
    join_keys: tuple[str, ...]
    key_types: dict[str, str]
    fields_blob: bytes
    nfields: int
    views: tuple[_ViewRead, ...]


@dataclass(frozen=True)
class _Plan:
    groups: tuple[_GroupPlan, ...]
    columns: tuple[str, ...]


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
        self._pool: queue.LifoQueue[RespConnection] = queue.LifoQueue(maxsize=pool_size)
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
        while True:
            try:
                self._pool.get_nowait().close()
            except queue.Empty:
                return

    @contextmanager
    def _connection(self) -> Iterator[RespConnection]:
        try:
            conn = self._pool.get_nowait()
        except queue.Empty:
            conn = RespConnection(self.endpoint, socket_timeout=self.socket_timeout)
        try:
            yield conn
        finally:
            try:
                self._pool.put_nowait(conn)
            except queue.Full:
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
            group = groups.setdefault(join_keys, {"key_types": key_types, "fields": [], "views": []})
            store_name = compute_versioned_name(view, self.versioned_names)
            outputs = tuple(f"{view_name}__{n}" if full_feature_names else n for n in names)
            group["views"].append(
                _ViewRead(outputs, tuple(fmt.decoder_for(types[n]) for n in names), len(group["fields"]))
            )
            group["fields"].extend(fmt.field_hash(store_name, n) for n in names)
            columns.extend(outputs)
        plans = []
        for join_keys, g in groups.items():
            blob = b"".join(b"$%d\r\n%s\r\n" % (len(f), f) for f in g["fields"])
            plans.append(_GroupPlan(join_keys, g["key_types"], blob, len(g["fields"]), tuple(g["views"])))
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
        out: dict[str, list[Any]] = {k: v for k, v in columns_in.items()}
        payload_parts: list[bytes] = []
        for group in plan.groups:
            missing = [k for k in group.join_keys if k not in columns_in]
            if missing:
                raise FeatureStoreError(f"Entity rows lack join key(s) {missing}")
            if len(group.join_keys) == 1 and group.key_types[group.join_keys[0]] == "STRING":
                keys = fmt.string_entity_keys(
                    group.join_keys[0], columns_in[group.join_keys[0]], self.project
                )
            else:
                keys = fmt.entity_keys(
                    {k: pa.array(columns_in[k]) for k in group.join_keys}, group.key_types, self.project
                )
            head = b"*%d\r\n$5\r\nHMGET\r\n" % (group.nfields + 2)
            payload_parts.extend(b"%s$%d\r\n%s\r\n%s" % (head, len(k), k, group.fields_blob) for k in keys)
        replies = self._execute(b"".join(payload_parts), len(payload_parts))
        offset = 0
        for group in plan.groups:
            group_replies = replies[offset : offset + n]
            offset += n
            for view in group.views:
                for j, (name, decode) in enumerate(zip(view.outputs, view.decoders, strict=True)):
                    idx = view.first_field + j
                    out[name] = [decode(r[idx]) for r in group_replies]
        return out

    def _execute(self, payload: bytes, count: int) -> list[Any]:
        if count == 0:
            return []
        last: Exception | None = None
        for _ in range(2):
            with self._connection() as conn:
                try:
                    replies = conn.execute(payload, count)
                except RespConnectionError as exc:
                    # A pooled connection may have been closed by the server; one fresh try.
                    last = exc
                    continue
            for r in replies:
                if isinstance(r, Exception):
                    raise FeatureStoreError(f"Redis at {self.endpoint.address} rejected a feature read: {r}")
            return replies
        raise FeatureStoreError(f"Reading features from Redis at {self.endpoint.address} failed: {last}")

    def refresh(self, store: FeatureStore) -> None:
        """Reload views and services from the registry (after an apply)."""
        self.views, self.services = self._registry_objects(store)
        self._plans.clear()
