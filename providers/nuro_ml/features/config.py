"""The effective Feast configuration of a feature repository, and what may override it.

The repository's own ``feature_store.yaml`` is the source of truth: project, provider,
registry, online and offline stores, entity key serialization version, auth, batch engine.
Settings layered on top of it, from lowest to highest precedence:

1. ``feature_store.yaml`` of the repository (``${VAR}`` substituted from the environment, as
   Feast does; ``NURO_ML_DATA_DIR`` defaults to the platform's data directory). A repository
   without one gets the **embedded default**: project ``nuro_ml``, a file registry and a SQLite
   online store under ``settings.feast_dir()``, the file offline store;
2. ``NURO_ML_FEAST_<FIELD>`` environment variables (how a Ray job process receives the
   connection's values; ``NURO_ML_FEAST_FEATURE_STORE`` holds a JSON object);
3. the Airflow ``feast`` connection (see :class:`nuro_ml.hooks.feast.FeastHook`);
4. explicit hook arguments.

Within one layer, ``feature_store`` (a partial ``feature_store.yaml`` deep-merged onto the
configuration: mappings merge key by key, anything else replaces) applies first, then the typed
fields (``project``, ``online_store``, ``redis_connection_string``, ``online_host`` ...,
``registry_url``). Setting ``online_store`` to a type other than the configured one replaces the
whole online store section, so no option of the old store leaks into the new one.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field

from nuro_ml import settings
from nuro_ml.exceptions import FeatureStoreError

if TYPE_CHECKING:
    from feast import FeatureStore, RepoConfig

#: Environment variables read by :meth:`FeastSettings.from_env`.
ENV_PREFIX = "NURO_ML_FEAST_"

#: The file Feast reads a repository's configuration from.
CONFIG_FILE = "feature_store.yaml"

#: Option names whose values are credentials (masked in logs, never described).
_SECRET_KEY = re.compile(r"password|secret|token|credential|private_key|access_key|api_key|connection_string")
_VAR = re.compile(r"\$\{(\w+)\}|\$(\w+)")


class FeastSettings(BaseModel):
    """Overrides of a repository's Feast configuration (every field unset = keep the yaml's)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    project: str | None = None
    """Feast project name (alphanumeric and underscores)."""

    online_store: str | None = None
    """Online store type (``sqlite``, ``redis``, ``postgres`` or any other Feast type)."""

    redis_connection_string: str | None = None
    """Feast's Redis connection string: ``host:port[,db=0][,password=...][,ssl=true]``."""

    redis_key_ttl_seconds: int | None = None
    """Expire entity keys in Redis after this many seconds (None: keep)."""

    online_host: str | None = None
    """Online store server (Redis or PostgreSQL), from the connection's host."""

    online_port: int | None = None
    online_user: str | None = None
    online_password: str | None = None
    online_database: str | None = None
    """PostgreSQL database, or the Redis database number."""

    online_ssl: bool | None = None

    registry_url: str | None = None
    """SQLAlchemy URL of a SQL registry (PostgreSQL); replaces the registry section."""

    registry_cache_ttl_seconds: int | None = Field(default=None, ge=0)
    """How long a process trusts its cached copy of the registry."""

    cache_url: str | None = None
    """SQLAlchemy URL of the computation cache; None uses SQLite under feast_dir."""

    fast_redis: bool = True
    """Write to and read from Redis through the Arrow fast paths (Feast's exact format)."""

    sqlite_path: str | None = None
    """SQLite online store file."""

    registry_path: str | None = None
    """File registry location."""

    feature_store: dict[str, Any] = Field(default_factory=dict)
    """A partial ``feature_store.yaml``, deep-merged onto the repository's."""

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> FeastSettings:
        """Settings from ``NURO_ML_FEAST_<FIELD>`` variables, then ``overrides`` on top."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            raw = env.get(ENV_PREFIX + name.upper())
            if raw is not None and raw != "":
                values[name] = (
                    parse_mapping(raw, where=ENV_PREFIX + name.upper()) if name == "feature_store" else raw
                )
        for name, value in overrides.items():
            if value is None:
                continue
            if name == "feature_store":
                values[name] = deep_merge(values.get(name, {}), value)
            else:
                values[name] = value
        return cls.model_validate(values)

    def resolved_cache_url(self) -> str:
        return self.cache_url or f"sqlite:///{settings.feast_dir() / 'computation_cache.db'}"

    def resolve(self, repo_path: Path) -> ResolvedConfig:
        """The effective configuration of the repository at ``repo_path``."""
        path = repo_path / CONFIG_FILE
        if path.is_file():
            raw, origin = read_repo_yaml(path), str(path)
        else:
            raw, origin = embedded_default(), "embedded default"
        raw = deep_merge(raw, self.feature_store)
        raw = self._apply_typed(raw)
        return ResolvedConfig(raw=raw, origin=origin, repo_path=repo_path, settings=self)

    def repo_config(self, repo_path: Path) -> RepoConfig:
        """The Feast ``RepoConfig`` for ``repo_path`` with these overrides."""
        return self.resolve(repo_path).repo_config()

    def _apply_typed(self, raw: dict[str, Any]) -> dict[str, Any]:
        raw = dict(raw)
        if self.project:
            raw["project"] = self.project
        if self.registry_url:
            raw["registry"] = {
                "registry_type": "sql",
                "path": self.registry_url,
                # Pooled connections to PostgreSQL die with server restarts; check before use.
                "sqlalchemy_config_kwargs": {"pool_pre_ping": True},
            }
        elif self.registry_path:
            raw["registry"] = {**_registry_section(raw), "registry_type": "file", "path": self.registry_path}
        if self.registry_cache_ttl_seconds is not None:
            raw["registry"] = {**_registry_section(raw), "cache_ttl_seconds": self.registry_cache_ttl_seconds}

        online = dict(raw.get("online_store") or {})
        current = str(online.get("type", "sqlite"))
        wanted = self.online_store
        if wanted is None and (self.redis_connection_string or self.online_host) and current == "sqlite":
            # A server address on a SQLite repository means Redis (the platform's production store).
            wanted = "redis"
        if wanted and wanted != current:
            online = {"type": wanted}
            current = wanted
        if current == "redis":
            if self.redis_connection_string:
                online["connection_string"] = self.redis_connection_string
            elif self.online_host:
                online["connection_string"] = self._redis_connection_string()
            if self.redis_key_ttl_seconds:
                online["key_ttl_seconds"] = self.redis_key_ttl_seconds
        elif current == "postgres":
            fields = {
                "host": self.online_host,
                "port": self.online_port,
                "user": self.online_user,
                "password": self.online_password,
                "database": self.online_database,
                "sslmode": None if self.online_ssl is None else ("require" if self.online_ssl else "disable"),
            }
            online.update({k: v for k, v in fields.items() if v is not None})
        elif current == "sqlite":
            if self.sqlite_path:
                online["path"] = self.sqlite_path
        elif self.online_host or self.online_password:
            raise FeatureStoreError(
                f"The connection's host/login/password fill Redis and PostgreSQL online stores; the "
                f"{current!r} online store takes its options from the 'feature_store' extra"
            )
        raw["online_store"] = online
        return raw

    def _redis_connection_string(self) -> str:
        parts = [f"{self.online_host}:{self.online_port or 6379}"]
        if self.online_database not in (None, ""):
            if not str(self.online_database).isdigit():
                raise FeatureStoreError(
                    f"The Redis online store's database must be a number; the connection gives "
                    f"{self.online_database!r} (extra 'db' or schema)"
                )
            parts.append(f"db={int(str(self.online_database))}")
        if self.online_user:
            parts.append(f"username={self.online_user}")
        if self.online_password:
            parts.append(f"password={self.online_password}")
        if self.online_ssl:
            parts.append("ssl=true")
        return ",".join(parts)


@dataclass(frozen=True)
class ResolvedConfig:
    """A repository's effective Feast configuration (``raw`` is what ``RepoConfig`` receives)."""

    raw: dict[str, Any]
    origin: str
    repo_path: Path
    settings: FeastSettings

    @property
    def project(self) -> str:
        return str(self.raw.get("project", ""))

    @property
    def online(self) -> dict[str, Any]:
        return dict(self.raw.get("online_store") or {})

    @property
    def online_type(self) -> str:
        return str(self.online.get("type", "sqlite"))

    @property
    def redis_connection_string(self) -> str:
        return str(self.online.get("connection_string", "localhost:6379"))

    @property
    def redis_key_ttl_seconds(self) -> int | None:
        ttl = self.online.get("key_ttl_seconds")
        return int(ttl) if ttl else None

    @property
    def fast_redis(self) -> bool:
        return self.settings.fast_redis and str(self.online.get("redis_type", "redis")) == "redis"

    def repo_config(self) -> RepoConfig:
        from feast import RepoConfig

        from nuro_ml.features.registry_store import LOCKED_FILE_STORE_TYPE

        raw = self.raw
        registry = _registry_section(raw)
        if registry.get("registry_type", "file") == "file" and "://" not in str(registry.get("path", "")):
            self._absolute(registry.get("path")).parent.mkdir(parents=True, exist_ok=True)
            if not registry.get("registry_store_type"):
                # Backfill runs materialize at once; Feast's own file store is single-writer.
                raw = {**raw, "registry": {**registry, "registry_store_type": LOCKED_FILE_STORE_TYPE}}
        if self.online_type == "sqlite":
            self._absolute(self.online.get("path", "data/online.db")).parent.mkdir(
                parents=True, exist_ok=True
            )
        try:
            config = RepoConfig(**{**raw, "repo_path": self.repo_path})
        except Exception as exc:  # pydantic, Feast's import errors for unknown store types, ...
            raise FeatureStoreError(
                f"Invalid Feast configuration for repository {self.repo_path} (from {self.origin} and "
                f"the overrides): {redact_text(str(exc), self.secrets())}"
            ) from exc
        config.repo_path = self.repo_path
        return config

    def feature_store(self) -> FeatureStore:
        """A ``FeatureStore`` on this configuration, resolving relative paths from the repository."""
        from feast import FeatureStore

        # Without repo_path Feast resolves a relative registry path from the working directory.
        return FeatureStore(repo_path=str(self.repo_path), config=self.repo_config())

    def _absolute(self, path: Any) -> Path:
        p = Path(str(path))
        return p if p.is_absolute() else self.repo_path / p

    def online_target(self) -> str:
        """Identity of the online store (no secrets): cache entries are only valid for it."""
        online = self.online
        kind = self.online_type
        if kind == "redis":
            conn = self.redis_connection_string
            nodes = [part for part in conn.split(",") if "=" not in part]
            db = next((p.split("=", 1)[1] for p in conn.split(",") if p.startswith("db=")), "0")
            return f"redis://{','.join(nodes)}/{db}/{self.project}"
        if kind == "sqlite":
            return f"sqlite://{self._absolute(online.get('path', 'data/online.db'))}/{self.project}"
        public = {k: v for k, v in sorted(online.items()) if k != "type" and not _SECRET_KEY.search(k)}
        return f"{kind}://{json.dumps(public, sort_keys=True, default=str)}/{self.project}"

    def secrets(self) -> list[str]:
        """Every credential in the configuration (to mask in logs)."""
        found: list[str] = []
        _collect_secrets(self.raw, found)
        url = self.settings.cache_url
        if url and urlsplit(url).password:
            found.append(str(urlsplit(url).password))
        return sorted(set(found), key=len, reverse=True)

    def describe(self) -> dict[str, str]:
        """A loggable summary with credentials removed."""
        registry = _registry_section(self.raw)
        offline = self.raw.get("offline_store") or {"type": "file"}
        return {
            "config": self.origin,
            "project": self.project,
            "provider": str(self.raw.get("provider", "local")),
            "online_store": redact_text(self.online_target(), self.secrets()),
            "offline_store": str(offline.get("type", "file") if isinstance(offline, dict) else offline),
            "registry": redact_url(str(registry.get("path", ""))),
            "cache": redact_url(self.settings.resolved_cache_url()),
        }


def embedded_default() -> dict[str, Any]:
    """The platform's own configuration when a repository brings none."""
    feast_dir = settings.feast_dir()
    return {
        "project": "nuro_ml",
        "provider": "local",
        "registry": {
            "registry_type": "file",
            "path": str(feast_dir / "registry.db"),
            "cache_ttl_seconds": 60,
        },
        "online_store": {"type": "sqlite", "path": str(feast_dir / "online_store.db")},
        "offline_store": {"type": "file"},
        "entity_key_serialization_version": 3,
    }


def read_repo_yaml(path: Path) -> dict[str, Any]:
    """A ``feature_store.yaml`` as a mapping, ``${VAR}`` substituted (unset variables are an error)."""
    text = path.read_text()
    env = {"NURO_ML_DATA_DIR": str(settings.data_dir()), **os.environ}
    missing: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in env:
            # Like os.path.expandvars, an unknown bare $NAME stays as written; ${NAME} must exist.
            if match.group(1):
                missing.append(name)
            return match.group(0)
        return env[name]

    lines = [
        line if line.lstrip().startswith("#") else _VAR.sub(substitute, line) for line in text.splitlines()
    ]
    if missing:
        raise FeatureStoreError(
            f"{path} refers to environment variable(s) {sorted(set(missing))} that are not set"
        )
    try:
        raw = yaml.safe_load("\n".join(lines))
    except yaml.YAMLError as exc:
        raise FeatureStoreError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise FeatureStoreError(f"{path} must hold a mapping of Feast options, found {type(raw).__name__}")
    return raw


def parse_mapping(value: Any, *, where: str) -> dict[str, Any]:
    """A mapping given as a dict, or as JSON/YAML text (how connection extras carry it)."""
    if isinstance(value, dict):
        return value
    try:
        parsed = yaml.safe_load(str(value))
    except yaml.YAMLError as exc:
        raise FeatureStoreError(f"{where} is neither JSON nor YAML: {exc}") from exc
    if not isinstance(parsed, dict):
        raise FeatureStoreError(f"{where} must be a mapping of feature_store.yaml options")
    return parsed


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` onto ``base``: mappings merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _registry_section(raw: dict[str, Any]) -> dict[str, Any]:
    registry = raw.get("registry")
    if isinstance(registry, str):
        return {"registry_type": "file", "path": registry}
    return dict(registry or {})


def _collect_secrets(node: Any, found: list[str], key: str = "") -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            _collect_secrets(v, found, str(k))
    elif isinstance(node, list):
        for v in node:
            _collect_secrets(v, found, key)
    elif isinstance(node, str) and node:
        if _SECRET_KEY.search(key.lower()):
            if key == "connection_string":
                found.extend(p.split("=", 1)[1] for p in node.split(",") if p.startswith("password="))
            else:
                found.append(node)
        elif "://" in node and urlsplit(node).password:
            found.append(str(urlsplit(node).password))


def redact_text(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))
