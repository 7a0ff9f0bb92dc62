"""Fixtures of the telemetry stream tests: Spark, Redis and a Feast repository on that Redis."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.dataset as ds
import pytest
import redis

from tests.fixtures.services import RedisServer
from tests.fixtures.spark import spark_session  # noqa: F401

__all__ = ["StreamEnv", "committed", "count_rows", "stream_env"]

_DB = 11  # a database of its own on the shared session server


@dataclass
class StreamEnv:
    root: Path
    landing: Path
    output: Path
    checkpoint: Path
    state: Path
    repo: Path
    redis_url: str
    client: redis.Redis


def committed(table_dir: Path) -> ds.Dataset | None:
    """The files Spark's sink committed under ``table_dir`` (while the stream writes, others may be
    half written)."""
    from nuro_ml.etl.sink_log import committed_files

    files = committed_files(table_dir)
    return ds.dataset(sorted(str(f) for f in files), format="parquet") if files else None


def count_rows(table_dir: Path) -> int:
    """Committed rows under ``table_dir``."""
    data = committed(table_dir)
    return data.count_rows() if data is not None else 0


@pytest.fixture
def stream_env(
    tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[StreamEnv]:
    monkeypatch.setenv("NURO_ML_DATA_DIR", str(tmp_path / "data"))
    for name in ("ONLINE_STORE", "REDIS_CONNECTION_STRING", "REGISTRY_URL", "CACHE_URL"):
        monkeypatch.delenv(f"NURO_ML_FEAST_{name}", raising=False)
    client = redis.Redis(host=redis_server.host, port=redis_server.port, db=_DB, decode_responses=True)
    client.flushdb()
    from nuro_ml.features.stream_views import write_repo

    repo = write_repo(
        tmp_path / "repo",
        project="stream_test",
        redis_connection_string=f"{redis_server.host}:{redis_server.port},db={_DB}",
        output_path=tmp_path / "out",
    )
    yield StreamEnv(
        root=tmp_path,
        landing=tmp_path / "landing",
        output=tmp_path / "out",
        checkpoint=tmp_path / "checkpoint",
        state=tmp_path / "state",
        repo=repo,
        redis_url=f"redis://{redis_server.host}:{redis_server.port}/{_DB}",
        client=client,
    )
    client.flushdb()
    client.close()
