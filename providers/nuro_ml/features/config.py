"""Where Feast keeps its registry and online store, as one validated settings object.

Embedded default (nothing configured): a file registry and a SQLite online store under
``settings.feast_dir()``, the file offline store reading Parquet under the ETL output root.
Production: a Redis online store and a SQL registry on PostgreSQL, so that concurrent DAG
runs and the feature server share one registry. The settings come from (highest first) explicit
arguments, the Airflow connection (see :class:`nuro_ml.hooks.feast.FeastHook`), ``NURO_ML_FEAST_*``
environment variables (how a Ray job process gets them) and the defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field

from nuro_ml import settings

if TYPE_CHECKING:
    from feast import RepoConfig

#: Environment variables read by :meth:`FeastSettings.from_env`.
ENV_PREFIX = "NURO_ML_FEAST_"


class FeastSettings(BaseModel):
    """Feast back ends for one feature repository."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    project: str = "nuro_ml"
    """Feast project name (alphanumeric and underscores)."""

    online_store: Literal["sqlite", "redis"] = "sqlite"
    """``sqlite`` (embedded file under feast_dir) or ``redis``."""

    redis_connection_string: str = "127.0.0.1:6379"
    """Feast's Redis connection string: ``host:port[,db=0][,password=...][,ssl=true]``."""

    redis_key_ttl_seconds: int | None = None
    """Expire entity keys in Redis after this many seconds (None: keep)."""

    registry_url: str | None = None
    """SQLAlchemy URL of a SQL registry (PostgreSQL); None uses the file registry under feast_dir."""

    registry_cache_ttl_seconds: int = Field(default=60, ge=0)
    """How long a process trusts its cached copy of the registry."""

    cache_url: str | None = None
    """SQLAlchemy URL of the computation cache; None uses SQLite under feast_dir."""

    fast_redis: bool = True
    """Write to and read from Redis through the Arrow fast paths (Feast's exact format)."""

    sqlite_path: str | None = None
    """SQLite online store file; None uses feast_dir()/online_store.db."""

    registry_path: str | None = None
    """File registry location; None uses feast_dir()/registry.db."""

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> FeastSettings:
        """Settings from ``NURO_ML_FEAST_<FIELD>`` variables, then ``overrides`` on top."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            raw = env.get(ENV_PREFIX + name.upper())
            if raw is not None and raw != "":
                values[name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)

    def resolved_registry_path(self) -> str:
        return self.registry_path or str(settings.feast_dir() / "registry.db")

    def resolved_sqlite_path(self) -> str:
        return self.sqlite_path or str(settings.feast_dir() / "online_store.db")

    def resolved_cache_url(self) -> str:
        return self.cache_url or f"sqlite:///{settings.feast_dir() / 'computation_cache.db'}"

    def online_store_config(self) -> dict[str, Any]:
        if self.online_store == "redis":
            cfg: dict[str, Any] = {"type": "redis", "connection_string": self.redis_connection_string}
            if self.redis_key_ttl_seconds:
                cfg["key_ttl_seconds"] = self.redis_key_ttl_seconds
            return cfg
        return {"type": "sqlite", "path": self.resolved_sqlite_path()}

    def registry_config(self) -> dict[str, Any]:
        if self.registry_url:
            return {
                "registry_type": "sql",
                "path": self.registry_url,
                "cache_ttl_seconds": self.registry_cache_ttl_seconds,
                # Pooled connections to PostgreSQL die with server restarts; check before use.
                "sqlalchemy_config_kwargs": {"pool_pre_ping": True},
            }
        return {
            "registry_type": "file",
            "path": self.resolved_registry_path(),
            "cache_ttl_seconds": self.registry_cache_ttl_seconds,
        }

    def online_target(self) -> str:
        """Identity of the online store (no secrets): cache entries are only valid for it."""
        if self.online_store == "redis":
            nodes = [part for part in self.redis_connection_string.split(",") if "=" not in part]
            db = next(
                (p.split("=", 1)[1] for p in self.redis_connection_string.split(",") if p.startswith("db=")),
                "0",
            )
            return f"redis://{','.join(nodes)}/{db}/{self.project}"
        return f"sqlite://{self.resolved_sqlite_path()}/{self.project}"

    def describe(self) -> dict[str, str]:
        """A loggable summary with credentials removed."""
        return {
            "project": self.project,
            "online_store": self.online_target(),
            "registry": redact_url(self.registry_url) if self.registry_url else self.resolved_registry_path(),
            "cache": redact_url(self.resolved_cache_url()),
        }

    def repo_config(self, repo_path: Path) -> RepoConfig:
        """The Feast ``RepoConfig`` for ``repo_path`` with these back ends."""
        from feast import RepoConfig

        if not self.registry_url:
            Path(self.resolved_registry_path()).parent.mkdir(parents=True, exist_ok=True)
        if self.online_store == "sqlite":
            Path(self.resolved_sqlite_path()).parent.mkdir(parents=True, exist_ok=True)
        return RepoConfig(
            project=self.project,
            provider="local",
            registry=self.registry_config(),
            online_store=self.online_store_config(),
            offline_store={"type": "file"},
            entity_key_serialization_version=3,
            repo_path=repo_path,
        )


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))
