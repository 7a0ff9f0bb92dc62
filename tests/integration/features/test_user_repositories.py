"""Repositories exactly as ``feast init`` makes them, through the operators, against stock Feast.

Each test initialises a template with the real ``feast init``, keeps a copy for stock Feast
(``feast apply`` + ``feast materialize`` of the same repository), runs our apply and
materialize operators over an interval with lookback, and compares the online read of every
feature view and on-demand feature view with stock Feast's.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
import redis
from nuro_ml.exceptions import FeatureStoreError
from nuro_ml.operators.feast import FeastApplyOperator, FeastMaterializeOperator, FeastPushOperator

from tests.fixtures.services import PostgresServer, RedisServer
from tests.integration.features.feast_repos import (
    copy_project,
    feast_init,
    online_features,
    stock_online_features,
)

pytestmark = pytest.mark.integration

DRIVERS = [{"driver_id": d, "val_to_add": 1, "val_to_add_2": 10} for d in (1001, 1002, 1003, 1004, 1005)]
LOOKBACK = timedelta(days=1)


@pytest.fixture(scope="module")
def local_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ``feast init -t local`` for the module; each test works on copies of it."""
    return feast_init(tmp_path_factory.mktemp("local_template"), "drivers", "local")


def _interval() -> tuple[datetime, datetime]:
    # The templates write hourly rows for the 15 days before the hour `feast init` ran.
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return end - timedelta(days=1), end


def _ours(
    repo: Path, conn_id: str | None, start: datetime, end: datetime, rows: list[dict[str, Any]] = DRIVERS
) -> dict[str, Any]:
    apply = FeastApplyOperator(task_id="apply", feast_conn_id=conn_id or "", repo_path=str(repo))
    assert apply.execute({})["added"]  # type: ignore[arg-type]
    op = FeastMaterializeOperator(
        task_id="materialize",
        feast_conn_id=conn_id or "",
        repo_path=str(repo),
        start=start.isoformat(),
        end=end.isoformat(),
        lookback=LOOKBACK,
    )
    xcom = op.execute({})  # type: ignore[arg-type]
    json.dumps(xcom)  # what XCom stores
    op.hook.store.refresh_registry()
    xcom["_online"] = online_features(op.hook.store, rows)
    return xcom


def _assert_same_online_values(ours: dict[str, list[Any]], stock: dict[str, list[Any]]) -> None:
    assert ours.keys() == stock.keys()
    for name in stock:
        assert ours[name] == stock[name], name
    # The comparison means something: every view was materialized (no all-null column).
    assert all(any(v is not None for v in values) for values in stock.values())


def _load_driver_stats(postgres: PostgresServer, database: str) -> None:
    from feast.driver_test_data import create_driver_hourly_stats_df
    from feast.infra.utils.postgres.connection_utils import df_to_postgres_table
    from feast.infra.utils.postgres.postgres_config import PostgreSQLConfig

    end = datetime.now().replace(microsecond=0, second=0, minute=0)
    frame = create_driver_hourly_stats_df([1001, 1002, 1003, 1004, 1005], end - timedelta(days=15), end)
    config = PostgreSQLConfig(
        host=postgres.host,
        port=postgres.port,
        database=database,
        db_schema="public",
        user=postgres.user,
        password=postgres.password,
        sslmode="disable",
    )
    scalar = ["event_timestamp", "driver_id", "conv_rate", "acc_rate", "avg_daily_trips", "created"]
    df_to_postgres_table(config=config, df=frame[scalar], table_name="feast_driver_hourly_stats")


def test_local_template_on_its_own_sqlite_store(tmp_path: Path, local_template: Path) -> None:
    repo = copy_project(local_template, tmp_path / "ours" / "drivers")
    stock_repo = copy_project(repo, tmp_path / "stock" / "drivers")
    start, end = _interval()

    ours = _ours(repo, None, start, end)
    stock = stock_online_features(stock_repo, start - LOOKBACK, end, DRIVERS)

    assert ours["paths"]["driver_hourly_stats"]["path"] == "partitioned"
    assert ours["paths"]["driver_hourly_stats"]["writer"] == "feast"
    assert ours["rows"]["driver_hourly_stats"] == 5
    assert ours["online_store"].startswith(f"sqlite://{repo / 'data' / 'online_store.db'}")
    _assert_same_online_values(ours["_online"], stock)
    profile = ours["_online"]["driver_hourly_stats__driver_profile"][0]
    assert set(profile) == {"name", "age"}  # a Struct, read back as one

    # Stream rows pushed between materializations reach the push-fed view, not the batch one.
    pushed_at = datetime.now(UTC).replace(microsecond=0)
    frame = pd.DataFrame(
        {
            "driver_id": [1001, 1002],
            "event_timestamp": [pushed_at, pushed_at],
            "created": [pushed_at, pushed_at],
            "conv_rate": [0.5, 0.25],
            "acc_rate": [0.75, 0.125],
            "avg_daily_trips": [42, 43],
            "driver_metadata": [{"vehicle_type": "van", "rating": "5"}] * 2,
            "driver_config": ['{"max_distance_km": 1}'] * 2,
            "driver_profile": [{"name": "pushed", "age": "30"}] * 2,
        }
    )
    for rows in (frame, pa.Table.from_pandas(frame)):  # a DataFrame, then the same as Arrow: idempotent
        push = FeastPushOperator(
            task_id="push",
            push_source_name="driver_stats_push_source",
            data=rows,
            feast_conn_id="",
            repo_path=str(repo),
        )
        assert push.execute({}) == {  # type: ignore[arg-type]
            "push_source": "driver_stats_push_source",
            "rows": 2,
            "to": "online",
            "feature_views": ["driver_hourly_stats_fresh"],
        }
    after = online_features(push.hook.store, DRIVERS)
    assert after["driver_hourly_stats_fresh__conv_rate"][:2] == [0.5, 0.25]
    assert after["driver_hourly_stats_fresh__driver_profile"][0] == {"name": "pushed", "age": "30"}
    assert after["transformed_conv_rate_fresh__conv_rate_plus_val1"][0] == 1.5  # on-demand view sees the push
    assert after["driver_hourly_stats__conv_rate"] == ours["_online"]["driver_hourly_stats__conv_rate"]
    assert (
        after["driver_hourly_stats_fresh__conv_rate"][2:]
        == ours["_online"]["driver_hourly_stats_fresh__conv_rate"][2:]
    )
    with pytest.raises(FeatureStoreError, match=r"push source 'nope'.*driver_stats_push_source"):
        FeastPushOperator(
            task_id="p", push_source_name="nope", data=frame, feast_conn_id="", repo_path=str(repo)
        ).execute(
            {}  # type: ignore[arg-type]
        )


def test_local_template_into_redis_through_the_fast_writer(
    tmp_path: Path, local_template: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection switches the yaml's SQLite to Redis; Map, Json and Struct go byte for byte."""
    ours_db, stock_db = 11, 12
    for db in (ours_db, stock_db):
        redis.Redis(host=redis_server.host, port=redis_server.port, db=db).flushdb()
    conn = {
        "conn_type": "feast",
        "host": redis_server.host,
        "port": redis_server.port,
        "extra": {"db": ours_db},
    }
    monkeypatch.setenv("AIRFLOW_CONN_FEAST_REDIS_USER", json.dumps(conn))
    repo = copy_project(local_template, tmp_path / "ours" / "drivers")
    stock_repo = copy_project(repo, tmp_path / "stock" / "drivers")
    yaml_path = stock_repo / "feature_store.yaml"
    yaml_path.write_text(
        yaml_path.read_text().replace(
            "    type: sqlite\n    path: data/online_store.db",
            f"    type: redis\n    connection_string: {redis_server.connection_string},db={stock_db}",
        )
    )
    start, end = _interval()

    ours = _ours(repo, "feast_redis_user", start, end)
    stock = stock_online_features(stock_repo, start - LOOKBACK, end, DRIVERS)

    assert ours["paths"]["driver_hourly_stats"]["writer"] == "redis"
    assert ours["online_store"].endswith(f"/{ours_db}/drivers")
    _assert_same_online_values(ours["_online"], stock)
    ours_client = redis.Redis(host=redis_server.host, port=redis_server.port, db=ours_db)
    stock_client = redis.Redis(host=redis_server.host, port=redis_server.port, db=stock_db)
    ours_dump = {k: ours_client.hgetall(k) for k in ours_client.scan_iter()}
    stock_dump = {k: stock_client.hgetall(k) for k in stock_client.scan_iter()}
    assert ours_dump == stock_dump  # Feast's exact bytes, keys and fields


def test_postgres_template_through_feasts_engine_with_the_cache_as_declared(
    tmp_path: Path,
    postgres: PostgresServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """PostgreSQL offline + online stores and a SQL registry; the source is a query, not files."""
    data_db = f"feast_{uuid.uuid4().hex[:8]}"
    ours_db = f"feast_{uuid.uuid4().hex[:8]}"
    postgres.create_database(data_db)
    postgres.create_database(ours_db)
    # Feast 0.67's bootstrap cannot upload its own sample frame (psycopg cannot adapt its dict
    # columns), so the template is initialised without the upload and the same frame's columns
    # that the template's views read are loaded with Feast's own helper.
    answers = [
        postgres.host,
        str(postgres.port),
        data_db,
        "public",
        postgres.user,
        postgres.password,
        "disable",
        "n",
    ]
    repo = feast_init(tmp_path / "ours", "drivers", "postgres", answers)
    _load_driver_stats(postgres, data_db)
    stock_repo = copy_project(repo, tmp_path / "stock" / "drivers")
    # Ours keeps its registry and online tables in a database of its own (same project name):
    # the connection fills the online store's database and the registry URL.
    conn = {
        "conn_type": "feast",
        "schema": ours_db,
        "password": postgres.password,
        "extra": {"registry_url": postgres.url_for(ours_db)},
    }
    monkeypatch.setenv("AIRFLOW_CONN_FEAST_PG_USER", json.dumps(conn))
    start, end = _interval()

    with caplog.at_level("INFO", logger="nuro_ml.features"):
        ours = _ours(repo, "feast_pg_user", start, end)
    stock = stock_online_features(stock_repo, start - LOOKBACK, end, DRIVERS)

    path = ours["paths"]["driver_hourly_stats"]
    assert path["path"] == "feast" and path["writer"] == "feast engine" and path["cache"] == "off"
    assert "PostgreSQLSource is not a file source" in path["reason"]
    assert ours["rows"]["driver_hourly_stats"] is None and ours["cache_misses"] == 2
    assert "recomputed, its PostgreSQLSource cannot be fingerprinted" in caplog.text
    _assert_same_online_values(ours["_online"], stock)

    # A declared data version makes the cache usable; a new version recomputes.
    def again(versions: dict[str, str]) -> dict[str, Any]:
        op = FeastMaterializeOperator(
            task_id="materialize",
            feast_conn_id="feast_pg_user",
            repo_path=str(repo),
            start=start.isoformat(),
            end=end.isoformat(),
            lookback=LOOKBACK,
            data_versions=versions,
        )
        return op.execute({})  # type: ignore[arg-type]

    versioned = {"driver_hourly_stats": "v1", "driver_hourly_stats_fresh": "v1"}
    first = again(versioned)
    assert first["cache_misses"] == 2 and first["paths"]["driver_hourly_stats"]["cache"] == "data_version:v1"
    assert again(versioned)["cache_hits"] == 2
    bumped = again({**versioned, "driver_hourly_stats": "v2"})
    assert bumped["cache"]["driver_hourly_stats"] == {"hits": 0, "misses": 1}
    assert bumped["cache"]["driver_hourly_stats_fresh"] == {"hits": 1, "misses": 0}
