"""Hook configuration precedence and the operators' arguments (no Feast I/O)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from nuro_ml.exceptions import FeatureStoreError
from nuro_ml.features.cache import Computation, ComputationCache
from nuro_ml.features.config import FeastSettings
from nuro_ml.features.partitions import PartitionedSource
from nuro_ml.features.registry_store import LOCKED_FILE_STORE_TYPE
from nuro_ml.features.synthetic import write_scene_stats
from nuro_ml.hooks.feast import FeastHook
from nuro_ml.operators.feast import FeastMaterializeOperator, parse_instant

REDIS_CONN = {
    "conn_type": "feast",
    "host": "redis.internal",
    "port": 6380,
    "login": "feast",
    "password": "s3cret-pw",
    "extra": {"db": 2, "registry_url": "postgresql+psycopg://feast:pg-pw@db:5432/feast", "project": "fleet"},
}

USER_YAML = """
project: drivers
provider: local
registry:
  registry_type: sql
  path: postgresql+psycopg://feast:${FEAST_TEST_REGISTRY_PW}@pg.internal:5432/registry
  cache_ttl_seconds: 30
online_store:
  type: postgres
  host: pg.internal
  port: 5432
  database: online
  user: feast
  password: yaml-pw
offline_store:
  type: postgres
  host: pg.internal
  database: warehouse
  user: analyst
  password: offline-yaml-pw
entity_key_serialization_version: 3
"""


def _user_repo(tmp_path: Path, text: str = USER_YAML) -> Path:
    repo = tmp_path / "user_repo"
    repo.mkdir(parents=True)
    (repo / "feature_store.yaml").write_text(text)
    return repo


def test_the_repository_yaml_is_the_source_of_truth(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEAST_TEST_REGISTRY_PW", "reg-pw")
    raw = FeastHook(feast_conn_id=None, repo_path=_user_repo(tmp_path)).resolved.raw
    assert raw["project"] == "drivers"
    assert raw["registry"]["path"] == "postgresql+psycopg://feast:reg-pw@pg.internal:5432/registry"
    assert raw["online_store"]["password"] == "yaml-pw"
    assert raw["offline_store"] == {
        "type": "postgres",
        "host": "pg.internal",
        "database": "warehouse",
        "user": "analyst",
        "password": "offline-yaml-pw",
    }
    config = FeastHook(feast_conn_id=None, repo_path=_user_repo(tmp_path / "b")).resolved.repo_config()
    assert config.online_store.type == "postgres" and config.offline_store.type == "postgres"
    assert config.registry.cache_ttl_seconds == 30


def test_an_unset_variable_in_the_yaml_is_named(tmp_path: Path, data_dir: Path) -> None:
    repo = _user_repo(tmp_path)
    with pytest.raises(FeatureStoreError, match=r"FEAST_TEST_REGISTRY_PW.*not set|not set.*FEAST_TEST"):
        _ = FeastHook(feast_conn_id=None, repo_path=repo).resolved


def test_connection_overrides_and_fills_the_yaml_and_arguments_win(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Precedence: hook arguments > connection (typed fields over its feature_store extra) > yaml."""
    monkeypatch.setenv("FEAST_TEST_REGISTRY_PW", "reg-pw")
    conn = {
        "conn_type": "feast",
        "host": "pg-prod.internal",
        "login": "svc_feast",
        "password": "conn-online-pw",
        "schema": "online_prod",
        "extra": {
            "feature_store": {
                "offline_store": {"password": "conn-offline-pw"},
                "online_store": {"host": "ignored-by-typed-field", "sslmode": "require"},
            },
        },
    }
    monkeypatch.setenv("AIRFLOW_CONN_FEAST_USER", json.dumps(conn))
    repo = _user_repo(tmp_path)
    raw = FeastHook("feast_user", repo_path=repo).resolved.raw
    assert raw["online_store"] == {
        "type": "postgres",
        "host": "pg-prod.internal",
        "port": 5432,
        "database": "online_prod",
        "user": "svc_feast",
        "password": "conn-online-pw",
        "sslmode": "require",
    }
    # Filled secret, everything else from the yaml.
    assert raw["offline_store"]["password"] == "conn-offline-pw"
    assert raw["offline_store"]["user"] == "analyst" and raw["offline_store"]["database"] == "warehouse"
    assert raw["project"] == "drivers"

    argued = FeastHook("feast_user", repo_path=repo, project="other", online_store="sqlite").resolved.raw
    assert argued["project"] == "other"
    assert argued["online_store"] == {"type": "sqlite"}  # a new type replaces the section


def test_connection_secrets_are_masked_and_never_described(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from airflow.sdk._shared.secrets_masker import redact

    monkeypatch.setenv("FEAST_TEST_REGISTRY_PW", "Qz81c2registrysecret")
    conn = {
        "conn_type": "feast",
        "password": "Qz5e1donlinesecret",
        "extra": {"feature_store": json.dumps({"offline_store": {"password": "Qz9a7bofflinesecret"}})},
    }
    monkeypatch.setenv("AIRFLOW_CONN_FEAST_MASKED", json.dumps(conn))
    secrets = ["Qz81c2registrysecret", "Qz5e1donlinesecret", "Qz9a7bofflinesecret"]
    assert [redact(f"x {s}") for s in secrets] == [f"x {s}" for s in secrets]
    hook = FeastHook("feast_masked", repo_path=_user_repo(tmp_path))
    described = json.dumps(hook.describe())
    assert all(s not in described for s in secrets)
    assert all(redact(f"x {s}") == "x ***" for s in secrets)
    # Whatever a task logs about the store (here the raw configuration) goes through the
    # masker that Airflow's task log handler applies.
    with caplog.at_level("INFO", logger="nuro_ml.features"):
        logging.getLogger("nuro_ml.features").info("store %s", hook.resolved.raw)
    logged = "\n".join(redact(r.getMessage()) for r in caplog.records)
    assert "online_store" in logged and all(s not in logged for s in secrets)


def test_platform_connection_on_the_embedded_repository_selects_redis_and_sql_registry(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_FEAST_PROD", json.dumps(REDIS_CONN))
    resolved = FeastHook("feast_prod").resolved
    assert resolved.online_type == "redis"
    assert resolved.redis_connection_string == "redis.internal:6380,db=2,username=feast,password=s3cret-pw"
    assert resolved.raw["registry"]["registry_type"] == "sql"
    assert resolved.project == "fleet"
    described = json.dumps(FeastHook("feast_prod").describe())
    assert "s3cret-pw" not in described and "pg-pw" not in described
    assert "redis://redis.internal:6380/2/fleet" in described

    overridden = FeastHook("feast_prod", online_store="sqlite", project="demo").resolved
    assert overridden.online_type == "sqlite"
    assert overridden.project == "demo"


def test_no_configuration_means_our_repository_on_sqlite(data_dir: Path, tmp_path: Path) -> None:
    resolved = FeastHook().resolved
    assert resolved.online == {"type": "sqlite", "path": str(data_dir / "feast" / "online_store.db")}
    assert resolved.raw["registry"]["path"] == str(data_dir / "feast" / "registry.db")
    assert resolved.raw["project"] == "nuro_ml"
    assert (
        resolved.settings.resolved_cache_url() == f"sqlite:///{data_dir / 'feast' / 'computation_cache.db'}"
    )
    # A repository without a feature_store.yaml gets the same embedded default.
    bare = tmp_path / "bare"
    bare.mkdir()
    embedded = FeastHook(repo_path=bare).resolved
    assert embedded.origin == "embedded default" and embedded.online == resolved.online
    # Backfill runs materialize at once: the file registry is written atomically, under a lock.
    assert embedded.repo_config().registry.registry_store_type == LOCKED_FILE_STORE_TYPE


def test_file_registries_get_the_locked_store_unless_one_is_named(tmp_path: Path, data_dir: Path) -> None:
    file_yaml = "project: p\nprovider: local\nregistry: data/registry.db\nonline_store:\n  type: sqlite\n"
    config = FeastHook(repo_path=_user_repo(tmp_path / "a", file_yaml)).resolved.repo_config()
    assert config.registry.registry_store_type == LOCKED_FILE_STORE_TYPE
    named = file_yaml.replace(
        "registry: data/registry.db",
        "registry:\n  path: data/registry.db\n  registry_store_type: FileRegistryStore",
    )
    config = FeastHook(repo_path=_user_repo(tmp_path / "b", named)).resolved.repo_config()
    assert config.registry.registry_store_type == "FileRegistryStore"
    remote = file_yaml.replace("registry: data/registry.db", "registry: s3://bucket/registry.db")
    config = FeastHook(repo_path=_user_repo(tmp_path / "c", remote)).resolved.repo_config()
    assert config.registry.registry_store_type is None


def test_env_settings_reach_processes_without_airflow(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("NURO_ML_FEAST_ONLINE_STORE", "redis")
    monkeypatch.setenv("NURO_ML_FEAST_REDIS_CONNECTION_STRING", "10.0.0.5:6379")
    monkeypatch.setenv("NURO_ML_FEAST_FEATURE_STORE", '{"offline_store": {"type": "file"}}')
    resolved = FeastSettings.from_env().resolve(tmp_path)
    assert resolved.online == {"type": "redis", "connection_string": "10.0.0.5:6379"}
    assert resolved.raw["offline_store"] == {"type": "file"}


def test_a_named_connection_that_does_not_exist_is_an_error(data_dir: Path) -> None:
    with pytest.raises(Exception, match="feast_missing"):
        _ = FeastHook("feast_missing").feast_settings


def test_materialize_operator_arguments() -> None:
    op = FeastMaterializeOperator(task_id="materialize")
    assert op.start == "{{ data_interval_start }}" and op.end == "{{ data_interval_end }}"
    assert op.lookback == timedelta(days=1)
    assert set(op.template_fields) == {
        "start",
        "end",
        "feature_views",
        "feast_conn_id",
        "repo_path",
        "data_versions",
    }
    with pytest.raises(ValueError, match="lookback"):
        FeastMaterializeOperator(task_id="m", lookback=timedelta(hours=-1))
    with pytest.raises(ValueError, match="fingerprint"):
        FeastMaterializeOperator(task_id="m", fingerprint="md5")  # type: ignore[arg-type]


def test_rendered_interval_strings_parse_as_utc() -> None:
    assert parse_instant("2026-03-01 00:00:00+00:00", field="start") == datetime(2026, 3, 1, tzinfo=UTC)
    assert parse_instant("2026-03-01T02:00:00+02:00", field="end") == datetime(2026, 3, 1, tzinfo=UTC)
    assert parse_instant("2026-03-01T00:00:00", field="end") == datetime(2026, 3, 1, tzinfo=UTC)
    with pytest.raises(FeatureStoreError, match="start='yesterday'"):
        parse_instant("yesterday", field="start")


def test_empty_interval_is_rejected(data_dir: Path) -> None:
    op = FeastMaterializeOperator(task_id="m", start="2026-03-02T00:00:00Z", end="2026-03-01T00:00:00Z")
    with pytest.raises(FeatureStoreError, match="empty"):
        op.execute({})  # type: ignore[arg-type]


def test_partition_selection_and_fingerprints(tmp_path: Path) -> None:
    from datetime import date

    root = tmp_path / "scene_stats"
    write_scene_stats(root, days=[date(2026, 3, d) for d in (1, 2, 5)], vehicles=["v1"], scenes_per_drive=2)
    (root / "date=2026-03-02" / "_SUCCESS").write_text("")
    (root / "date=2026-03-02" / "vehicle=v1" / ".part-1.parquet.tmp").write_bytes(b"partial")
    source = PartitionedSource.at(root)
    assert source.by_date
    picked = source.partitions_for(
        datetime(2026, 3, 3, tzinfo=UTC), datetime(2026, 3, 6, tzinfo=UTC), timedelta(days=2)
    )
    assert [p.label for p in picked] == ["date=2026-03-02", "date=2026-03-05"]
    assert [f.path.name for f in picked[0].files] == ["part-00000.parquet"]

    before = picked[0].fingerprint("stat"), picked[0].fingerprint("content")
    write_scene_stats(
        root, days=[date(2026, 3, 2)], vehicles=["v1"], scenes_per_drive=2
    )  # same bytes, new mtime
    again = source.partition(date(2026, 3, 2))
    assert again.fingerprint("content") == before[1]
    assert again.fingerprint("stat") != before[0]


def test_cache_keys_and_records(tmp_path: Path) -> None:
    cache = ComputationCache(f"sqlite:///{tmp_path / 'c.db'}")
    base = dict(
        feature_view="v",
        view_hash="h",
        partition="date=2026-03-01",
        fingerprint="f",
        interval_start=datetime(2026, 3, 1, tzinfo=UTC),
        interval_end=datetime(2026, 3, 2, tzinfo=UTC),
        target="t",
    )
    unit = Computation(**base)  # type: ignore[arg-type]
    variants = [
        Computation(**{**base, k: v})
        for k, v in [  # type: ignore[arg-type]
            ("view_hash", "h2"),
            ("fingerprint", "f2"),
            ("target", "t2"),
            ("interval_end", datetime(2026, 3, 3, tzinfo=UTC)),
        ]
    ]
    assert len({unit.key, *(v.key for v in variants)}) == 5
    assert cache.hits([unit, *variants]) == set()
    cache.record(unit, 10)
    cache.record(unit, 10)  # a retried task records again: fine
    assert cache.hits([unit, *variants]) == {unit.key}
    assert ComputationCache(cache.url).hits([unit]) == {unit.key}  # durable across instances
    assert cache.forget(["v"]) == 1 and cache.count() == 0
    cache.dispose()


def test_cli_yaml_describes_the_same_store_as_the_hook(data_dir: Path) -> None:
    from feast.repo_config import load_repo_config

    from tests.unit.features.scene_data import FEATURE_REPO

    from_yaml = load_repo_config(FEATURE_REPO, FEATURE_REPO / "feature_store.yaml")
    from_hook = FeastHook(feast_conn_id=None).resolved.repo_config()
    assert from_yaml.project == from_hook.project
    assert from_yaml.registry.path == from_hook.registry.path
    assert from_yaml.registry.registry_store_type == from_hook.registry.registry_store_type
    assert from_yaml.online_store.path == from_hook.online_store.path
    assert from_yaml.entity_key_serialization_version == from_hook.entity_key_serialization_version


def test_bad_connection_values_are_named(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_FEAST_BAD_DB", json.dumps({"conn_type": "feast", "host": "r", "schema": "features"})
    )
    with pytest.raises(FeatureStoreError, match=r"database must be a number.*'features'"):
        _ = FeastHook("feast_bad_db").resolved
    monkeypatch.setenv(
        "AIRFLOW_CONN_FEAST_BAD_EXTRA",
        json.dumps({"conn_type": "feast", "extra": {"feature_store": "[1, 2]"}}),
    )
    with pytest.raises(
        FeatureStoreError, match="'feature_store' of connection 'feast_bad_extra' must be a mapping"
    ):
        _ = FeastHook("feast_bad_extra").resolved


def test_an_invalid_yaml_is_named_with_its_repository(tmp_path: Path, data_dir: Path) -> None:
    repo = _user_repo(
        tmp_path, "project: p\nregistry: data/registry.db\nonline_store:\n  type: nosuchstore\n"
    )
    with pytest.raises(FeatureStoreError, match=rf"Invalid Feast configuration for repository {repo}"):
        _ = FeastHook(feast_conn_id=None, repo_path=repo).store
    broken = _user_repo(tmp_path / "b", "project: [unclosed\n")
    with pytest.raises(FeatureStoreError, match=r"feature_store\.yaml is not valid YAML"):
        _ = FeastHook(feast_conn_id=None, repo_path=broken).resolved
