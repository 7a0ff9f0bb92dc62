"""Hook for Feast: opens a feature repository with its own configuration and runs its operations.

The repository's ``feature_store.yaml`` is the source of truth. The ``feast`` connection
overrides or fills it, chiefly with secrets; explicit hook arguments override the connection
(see :mod:`nuro_ml.features.config` for the full precedence):

* ``host`` / ``port`` / ``login`` / ``password`` / ``schema``: the online store's server. For a
  Redis online store they make the connection string (``login`` is the ACL user, extra ``db``
  the database number, extra ``ssl``); for Feast's PostgreSQL online store they fill ``host``,
  ``port``, ``user``, ``password`` and ``database`` (``schema``). On a repository whose online
  store is SQLite (the embedded default), a host selects Redis;
* extra ``feature_store``: a partial ``feature_store.yaml`` (mapping, JSON or YAML text)
  deep-merged onto the repository's: any store option, for example the offline store's password;
* extras ``online_store`` (a Feast online store type; a different type replaces the section),
  ``project``, ``registry_url`` (SQLAlchemy URL of a SQL registry), ``cache_url`` (SQLAlchemy
  URL of the computation cache), ``redis_key_ttl_seconds``, ``fast_redis`` (use the Arrow fast
  paths on Redis, default true).

Every credential of the effective configuration is registered with Airflow's secrets masker.
Without a ``feast_default`` connection the repository's yaml (or, if it has none, the embedded
default: SQLite) applies. Feast itself is imported lazily: DAG files that only instantiate the
operators stay fast to parse.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from nuro_ml import settings
from nuro_ml.exceptions import FeatureStoreError
from nuro_ml.features.config import FeastSettings, ResolvedConfig, parse_mapping


@dataclass(frozen=True)
class PushResult:
    """What a push wrote (the push operator's XCom)."""

    push_source: str
    rows: int
    to: str
    feature_views: list[str]

    def to_xcom(self) -> dict[str, Any]:
        return {
            "push_source": self.push_source,
            "rows": self.rows,
            "to": self.to,
            "feature_views": self.feature_views,
        }


if TYPE_CHECKING:
    import threading
    from collections.abc import Mapping, Sequence

    import pandas as pd
    import pyarrow as pa
    from feast import FeatureStore
    from feast.repo_contents import RepoContents

    from nuro_ml.features.cache import ComputationCache
    from nuro_ml.features.materialize import MaterializeReport
    from nuro_ml.features.online_read import FastOnlineReader
    from nuro_ml.features.repo import ApplyResult
    from nuro_ml.features.writers import OnlineWriter


class FeastHook(BaseHook):
    """Feast feature store built from a connection (or the embedded defaults).

    :param feast_conn_id: :ref:`Feast connection id <howto/connection:feast>`; a missing
        ``feast_default`` connection means the embedded defaults.
    :param repo_path: feature repository directory (default ``settings.feature_repo_dir()``).
    :param project: Feast project; overrides the connection.
    :param online_store: Feast online store type (``sqlite``, ``redis``, ``postgres`` ...);
        overrides the connection and the repository's yaml.
    :param redis_connection_string: Feast Redis connection string; overrides the connection.
    :param registry_url: SQLAlchemy URL of a SQL registry; overrides the connection.
    :param cache_url: SQLAlchemy URL of the computation cache; overrides the connection.
    """

    conn_name_attr = "feast_conn_id"
    default_conn_name = "feast_default"
    conn_type = "feast"
    hook_name = "Feast"

    def __init__(
        self,
        feast_conn_id: str | None = default_conn_name,
        *,
        repo_path: str | Path | None = None,
        project: str | None = None,
        online_store: str | None = None,
        redis_connection_string: str | None = None,
        registry_url: str | None = None,
        cache_url: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.feast_conn_id = feast_conn_id
        self.repo_path = Path(repo_path).resolve() if repo_path else settings.feature_repo_dir()
        self._overrides: dict[str, Any] = {
            "project": project,
            "online_store": online_store,
            "redis_connection_string": redis_connection_string,
            "registry_url": registry_url,
            "cache_url": cache_url,
        }

    # ------------------------------------------------------------------ configuration

    def _connection_values(self) -> dict[str, Any]:
        if not self.feast_conn_id:
            return {}
        try:
            conn = self.get_connection(self.feast_conn_id)
        except AirflowNotFoundException:
            if self.feast_conn_id != self.default_conn_name:
                raise
            return {}
        extra = conn.extra_dejson
        values: dict[str, Any] = {}
        for name in (
            "project",
            "registry_url",
            "cache_url",
            "redis_key_ttl_seconds",
            "fast_redis",
            "online_store",
        ):
            if extra.get(name) not in (None, ""):
                values[name] = extra[name]
        if extra.get("feature_store") not in (None, ""):
            values["feature_store"] = parse_mapping(
                extra["feature_store"], where=f"Extra 'feature_store' of connection {self.feast_conn_id!r}"
            )
        fields = {
            "online_host": conn.host,
            "online_port": conn.port,
            "online_user": conn.login,
            "online_password": conn.password,
            "online_database": str(extra["db"]) if extra.get("db") not in (None, "") else conn.schema,
        }
        values.update({k: v for k, v in fields.items() if v not in (None, "")})
        if str(extra.get("ssl", "")).lower() in ("true", "1", "yes"):
            values["online_ssl"] = True
        return values

    @cached_property
    def feast_settings(self) -> FeastSettings:
        """Overrides of the repository's yaml: explicit args > connection > ``NURO_ML_FEAST_*`` env."""
        merged = self._connection_values()
        merged.update({k: v for k, v in self._overrides.items() if v is not None})
        try:
            return FeastSettings.from_env(**merged)
        except ValueError as exc:
            raise FeatureStoreError(
                f"Invalid Feast settings from connection {self.feast_conn_id!r}: {exc}"
            ) from exc

    @cached_property
    def resolved(self) -> ResolvedConfig:
        """The effective configuration; its credentials are registered with the secrets masker."""
        from airflow.sdk.log import mask_secret

        resolved = self.feast_settings.resolve(self.repo_path)
        for secret in resolved.secrets():
            mask_secret(secret)
        return resolved

    def describe(self) -> dict[str, str]:
        """Loggable description of the back ends (no credentials)."""
        return {"repo_path": str(self.repo_path), **self.resolved.describe()}

    # ------------------------------------------------------------------ clients

    @cached_property
    def store(self) -> FeatureStore:

        try:
            return self.resolved.feature_store()
        except FeatureStoreError:
            raise
        except Exception as exc:
            raise FeatureStoreError(
                f"Cannot open the Feast store for repository {self.repo_path}: {exc}"
            ) from exc

    def get_conn(self) -> FeatureStore:
        return self.store

    @cached_property
    def cache(self) -> ComputationCache:
        from nuro_ml.features.cache import ComputationCache

        return ComputationCache(self.resolved.settings.resolved_cache_url())

    def writer(self) -> OnlineWriter:
        """The fastest correct writer for the configured online store."""
        from nuro_ml.features.resp import RedisEndpoint
        from nuro_ml.features.writers import FeastProviderWriter, RedisArrowWriter

        cfg = self.resolved
        if cfg.online_type == "redis" and cfg.fast_redis:
            return RedisArrowWriter(
                RedisEndpoint.from_feast(cfg.redis_connection_string),
                project=cfg.project,
                key_ttl_seconds=cfg.redis_key_ttl_seconds,
                versioned_names=self.store.config.registry.enable_online_feature_view_versioning,
                entity_key_serialization_version=self.store.config.entity_key_serialization_version,
            )
        return FeastProviderWriter(self.store)

    def online_reader(self) -> FastOnlineReader:
        """Pipelined Redis reader answering like ``FeatureStore.get_online_features``."""
        from nuro_ml.features.online_read import FastOnlineReader

        if self.resolved.online_type != "redis":
            raise FeatureStoreError(
                f"The fast online reader needs the Redis online store; repository {self.repo_path} "
                f"uses {self.resolved.online_type}"
            )
        return FastOnlineReader.from_store(self.store, self.resolved.redis_connection_string)

    # ------------------------------------------------------------------ operations

    def load_repo(self) -> RepoContents:
        from nuro_ml.features.repo import load_repo_contents

        return load_repo_contents(self.repo_path, self.resolved.project)

    def apply(self) -> ApplyResult:
        """Apply the feature repository; objects no longer defined are removed."""
        from nuro_ml.features.repo import apply_repo

        return apply_repo(self.store, self.load_repo(), self.repo_path)

    def materialize(
        self,
        *,
        start: datetime,
        end: datetime,
        feature_views: Sequence[str] | None = None,
        use_cache: bool = True,
        fingerprint: Literal["stat", "content"] = "stat",
        stop: threading.Event | None = None,
        data_versions: Mapping[str, str] | None = None,
    ) -> MaterializeReport:
        """Materialize ``[start, end)`` into the online store, skipping cached computations.

        Each view takes the partitioned fast path or Feast's own engine (see
        :mod:`nuro_ml.features.materialize`); ``data_versions`` (view -> declared version of
        its data) lets the cache skip views on Feast's engine.
        """
        from nuro_ml.features.materialize import Materializer
        from nuro_ml.features.writers import FeastProviderWriter

        writer = self.writer()
        try:
            return Materializer(
                self.store,
                writer=writer,
                fallback=FeastProviderWriter(self.store),
                data_versions=data_versions,
                target=self.resolved.online_target(),
                cache=self.cache if use_cache else None,
                fingerprint=fingerprint,
                stop=stop,
            ).run(start, end, feature_views)
        finally:
            writer.close()

    def push(
        self,
        push_source_name: str,
        data: pd.DataFrame | pa.Table,
        *,
        to: Literal["online", "offline", "online_and_offline"] = "online",
    ) -> PushResult:
        """Push rows to a push source: every feature view fed by it gets them (``FeatureStore.push``).

        Stream and batch share one online view this way: the view's batch source is
        materialized, and fresher rows are pushed to its push source between runs. The online
        store keeps the newest event per entity, so pushing the same rows again changes nothing.

        :param push_source_name: name of a ``PushSource`` in the registry.
        :param data: the rows (pandas DataFrame or Arrow table) with the join keys, the source's
            timestamp column and the features.
        :param to: ``online``, ``offline`` (appends to the batch source) or ``online_and_offline``.
        """
        import pyarrow as pa
        from feast.data_source import PushMode

        modes = {
            "online": PushMode.ONLINE,
            "offline": PushMode.OFFLINE,
            "online_and_offline": PushMode.ONLINE_AND_OFFLINE,
        }
        if to not in modes:
            raise FeatureStoreError(f"Push target must be one of {sorted(modes)}, got {to!r}")
        store = self.store
        store.refresh_registry()
        views = [
            v.name
            for v in store.list_feature_views()
            if v.stream_source is not None and v.stream_source.name == push_source_name
        ]
        if not views:
            known = sorted(s.name for s in store.list_data_sources() if type(s).__name__ == "PushSource")
            raise FeatureStoreError(
                f"No feature view of project {store.project!r} reads push source {push_source_name!r} "
                f"(push sources: {known}); apply the feature repository first"
            )
        frame = data.to_pandas() if isinstance(data, pa.Table) else data
        try:
            store.push(push_source_name, frame, to=modes[to])
        except Exception as exc:
            raise FeatureStoreError(
                f"Pushing {len(frame)} rows to push source {push_source_name!r} ({to}) failed: {exc}"
            ) from exc
        return PushResult(push_source=push_source_name, rows=len(frame), to=to, feature_views=sorted(views))

    def close(self) -> None:
        if "cache" in self.__dict__:
            self.cache.dispose()
