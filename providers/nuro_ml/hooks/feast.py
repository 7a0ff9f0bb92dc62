"""Hook for Feast: builds the feature store from an Airflow connection and runs its operations.

The ``feast`` connection describes the back ends; without one, the embedded defaults apply
(file registry + SQLite online store under ``settings.feast_dir()``):

* ``host`` / ``port`` / ``login`` / ``password``: the Redis online store (``login`` is the
  Redis ACL user); setting ``host`` selects Redis unless the extra ``online_store`` says otherwise;
* extras: ``online_store`` (``sqlite`` | ``redis``), ``db`` (Redis database number), ``ssl``,
  ``project``, ``registry_url`` (SQLAlchemy URL of a SQL registry on PostgreSQL),
  ``cache_url`` (SQLAlchemy URL of the computation cache), ``redis_key_ttl_seconds``,
  ``fast_redis`` (use the Arrow fast paths, default true).

Feast itself is imported lazily: DAG files that only instantiate the operators stay fast to parse.
"""

from __future__ import annotations

from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from nuro_ml import settings
from nuro_ml.exceptions import FeatureStoreError
from nuro_ml.features.config import FeastSettings

if TYPE_CHECKING:
    import threading
    from collections.abc import Sequence

    from feast import FeatureStore
    from feast.repo_contents import RepoContents

    from nuro_ml.features.cache import ComputationCache
    from nuro_ml.features.materialize import MaterializeReport
    from nuro_ml.features.online_read import FastOnlineReader
    from nuro_ml.features.repo import ApplyResult
    from nuro_ml.features.writers import OnlineWriter


class FeastHookProtocol(Protocol):
    """What the Feast operators need from a hook (lets a test or remote hook stand in)."""

    def apply(self) -> ApplyResult: ...

    def materialize(
        self,
        *,
        start: datetime,
        end: datetime,
        feature_views: Sequence[str] | None = None,
        use_cache: bool = True,
        fingerprint: Literal["stat", "content"] = "stat",
        stop: threading.Event | None = None,
    ) -> MaterializeReport: ...

    def describe(self) -> dict[str, str]: ...


class FeastHook(BaseHook):
    """Feast feature store built from a connection (or the embedded defaults).

    :param feast_conn_id: :ref:`Feast connection id <howto/connection:feast>`; a missing
        ``feast_default`` connection means the embedded defaults.
    :param repo_path: feature repository directory (default ``settings.feature_repo_dir()``).
    :param project: Feast project; overrides the connection.
    :param online_store: ``sqlite`` or ``redis``; overrides the connection.
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
        online_store: Literal["sqlite", "redis"] | None = None,
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
        from airflow.sdk.log import mask_secret

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
        if conn.host:
            values.setdefault("online_store", "redis")
            parts = [f"{conn.host}:{conn.port or 6379}"]
            if extra.get("db") not in (None, ""):
                parts.append(f"db={int(extra['db'])}")
            if conn.login:
                parts.append(f"username={conn.login}")
            if conn.password:
                mask_secret(conn.password)
                parts.append(f"password={conn.password}")
            if str(extra.get("ssl", "")).lower() in ("true", "1", "yes"):
                parts.append("ssl=true")
            values["redis_connection_string"] = ",".join(parts)
        for url_field in ("registry_url", "cache_url"):
            if values.get(url_field):
                _mask_url_password(values[url_field])
        return values

    @cached_property
    def feast_settings(self) -> FeastSettings:
        """Effective settings: explicit args > connection > ``NURO_ML_FEAST_*`` env > defaults."""
        merged = self._connection_values()
        merged.update({k: v for k, v in self._overrides.items() if v is not None})
        if merged.get("redis_connection_string"):
            from airflow.sdk.log import mask_secret

            for part in str(merged["redis_connection_string"]).split(","):
                if part.startswith("password="):
                    mask_secret(part.split("=", 1)[1])
        try:
            return FeastSettings.from_env(**merged)
        except ValueError as exc:
            raise FeatureStoreError(
                f"Invalid Feast settings from connection {self.feast_conn_id!r}: {exc}"
            ) from exc

    def describe(self) -> dict[str, str]:
        """Loggable description of the back ends (no credentials)."""
        return {"repo_path": str(self.repo_path), **self.feast_settings.describe()}

    # ------------------------------------------------------------------ clients

    @cached_property
    def store(self) -> FeatureStore:
        from feast import FeatureStore

        try:
            return FeatureStore(config=self.feast_settings.repo_config(self.repo_path))
        except Exception as exc:
            raise FeatureStoreError(
                f"Cannot open the Feast store for repository {self.repo_path}: {exc}"
            ) from exc

    def get_conn(self) -> FeatureStore:
        return self.store

    @cached_property
    def cache(self) -> ComputationCache:
        from nuro_ml.features.cache import ComputationCache

        return ComputationCache(self.feast_settings.resolved_cache_url())

    def writer(self) -> OnlineWriter:
        """The fastest correct writer for the configured online store."""
        from nuro_ml.features.resp import RedisEndpoint
        from nuro_ml.features.writers import FeastProviderWriter, RedisArrowWriter

        cfg = self.feast_settings
        online = self.store.config.online_store
        if (
            cfg.online_store == "redis"
            and cfg.fast_redis
            and str(getattr(online, "redis_type", "redis"))
            in (
                "redis",
                "RedisType.redis",
            )
        ):
            return RedisArrowWriter(
                RedisEndpoint.from_feast(cfg.redis_connection_string),
                project=cfg.project,
                key_ttl_seconds=cfg.redis_key_ttl_seconds,
                versioned_names=self.store.config.registry.enable_online_feature_view_versioning,
            )
        return FeastProviderWriter(self.store)

    def online_reader(self) -> FastOnlineReader:
        """Pipelined Redis reader answering like ``FeatureStore.get_online_features``."""
        from nuro_ml.features.online_read import FastOnlineReader

        if self.feast_settings.online_store != "redis":
            raise FeatureStoreError(
                f"The fast online reader needs the Redis online store; {self.feast_conn_id!r} uses "
                f"{self.feast_settings.online_store}"
            )
        return FastOnlineReader.from_store(self.store, self.feast_settings.redis_connection_string)

    # ------------------------------------------------------------------ operations

    def load_repo(self) -> RepoContents:
        from nuro_ml.features.repo import load_repo_contents

        return load_repo_contents(self.repo_path, self.feast_settings.project)

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
    ) -> MaterializeReport:
        """Materialize ``[start, end)`` into the online store, skipping cached computations."""
        from nuro_ml.features.materialize import Materializer

        writer = self.writer()
        try:
            return Materializer(
                self.store,
                writer=writer,
                target=self.feast_settings.online_target(),
                cache=self.cache if use_cache else None,
                fingerprint=fingerprint,
                stop=stop,
            ).run(start, end, feature_views)
        finally:
            writer.close()

    def close(self) -> None:
        if "cache" in self.__dict__:
            self.cache.dispose()


def _mask_url_password(url: str) -> None:
    from urllib.parse import urlsplit

    from airflow.sdk.log import mask_secret

    password = urlsplit(url).password
    if password:
        mask_secret(password)
