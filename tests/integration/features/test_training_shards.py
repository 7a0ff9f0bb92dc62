"""Staging content-keyed training shards to a moto S3 server and reading them back through the cache."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from nuro_ml.features.nvme_cache import ShardCache
from nuro_ml.training_data.loader import CachedS3Source, LocalSource, S3Source, ShardLoader
from nuro_ml.training_data.spec import DatasetSpec
from nuro_ml.training_data.staging import StagingError, load_manifest, stage_shards
from nuro_ml.training_data.synthetic import write_ego_motion

from tests.fixtures.s3 import moto_endpoint, s3_client  # noqa: F401

pytestmark = pytest.mark.integration

DAY = date(2026, 11, 24)
VEHICLES = ["veh-001", "veh-002", "veh-003", "veh-004"]


@pytest.fixture(scope="module")
def etl_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("etl")
    write_ego_motion(root, [DAY], VEHICLES, drives_per_day=1, drive_seconds=90.0)
    return root


@pytest.fixture(scope="module")
def client(moto_endpoint: str) -> Iterator[object]:  # noqa: F811
    c = s3_client(moto_endpoint)
    c.create_bucket(Bucket="shards")
    yield c


SPEC = DatasetSpec(start=DAY, end=DAY, shard_rows=100)


def test_staging_is_content_keyed_and_idempotent(etl_root: Path, client) -> None:
    first = stage_shards(SPEC, etl_root, "s3://shards/brake", client)
    shards = [s for split in first.manifest["splits"].values() for s in split["shards"]]
    assert first.uploaded_shards == len(shards) > 4 and first.reused_shards == 0
    for shard in shards:
        key = shard["uri"].removeprefix("s3://shards/")
        body = client.get_object(Bucket="shards", Key=key)["Body"].read()
        assert key == f"brake/shards/{hashlib.sha256(body).hexdigest()}.parquet"
    splits = first.manifest["splits"]
    assert set(splits["train"]["drives"]).isdisjoint(splits["holdout"]["drives"])
    assert len(splits["train"]["drives"]) + len(splits["holdout"]["drives"]) == len(VEHICLES)
    assert 0 < splits["train"]["positive_rate"] < 0.5

    again = stage_shards(SPEC, etl_root, "s3://shards/brake", client)
    assert (again.uploaded_shards, again.reused_shards, again.uploaded_bytes) == (0, len(shards), 0)
    assert again.manifest_uri == first.manifest_uri
    assert load_manifest(first.manifest_uri, client) == first.manifest
    xcom = again.to_xcom()
    assert xcom["rows"] == {"train": splits["train"]["rows"], "holdout": splits["holdout"]["rows"]}


def test_missing_partitions_and_single_drive_are_named(etl_root: Path, client) -> None:
    with pytest.raises(StagingError, match=r"no ego_motion partitions under .* for 2026-11-25\.\.2026-11-25"):
        stage_shards(
            DatasetSpec(start=date(2026, 11, 25), end=date(2026, 11, 25)), etl_root, "s3://shards/x", client
        )
    with pytest.raises(StagingError, match="a held-out split by drive needs two or more"):
        stage_shards(
            DatasetSpec(start=DAY, end=DAY, vehicles=("veh-001",)), etl_root, "s3://shards/x", client
        )


def test_loader_shards_by_rank_shuffles_by_epoch_and_reads_locally_from_epoch_two(
    etl_root: Path, client, tmp_path: Path
) -> None:
    manifest = stage_shards(SPEC, etl_root, "s3://shards/brake", client).manifest
    train = manifest["splits"]["train"]["shards"]
    channels = len(manifest["channels"])
    cache = ShardCache(tmp_path / "nvme", capacity_bytes=1 << 30, s3_client=client)
    loaders = [
        ShardLoader(
            train, CachedS3Source(cache), channels=channels, batch_size=32, rank=r, world_size=2, seed=1
        )
        for r in range(2)
    ]
    epoch0 = [list(loader.epoch(0)) for loader in loaders]
    assert len(epoch0[0]) == len(epoch0[1]) == loaders[0].batches_per_epoch(0) > 0
    assert all(x.shape == (32, 20, channels) and y.shape == (32,) for x, y in epoch0[0])
    assert cache.stats.misses == len(train) and cache.stats.bytes_from_remote > 0
    # The two ranks read disjoint windows.
    seen = [{xb.tobytes() for x, _ in batches for xb in x} for batches in epoch0]
    assert not seen[0] & seen[1]

    remote_before = cache.stats.bytes_from_remote
    epoch1 = list(loaders[0].epoch(1))
    assert cache.stats.bytes_from_remote == remote_before and cache.stats.misses == len(train)
    assert not np.array_equal(epoch1[0][0], epoch0[0][0][0])  # reshuffled

    # Straight from S3 and from a local copy, the loader yields the very same batches.
    local = tmp_path / "local"
    local.mkdir()
    for shard in train:
        (local / shard["uri"].rsplit("/", 1)[-1]).write_bytes(cache.read_bytes(shard["uri"]))
    for source in (S3Source(client), LocalSource(local)):
        same = list(
            ShardLoader(train, source, channels=channels, batch_size=32, world_size=2, seed=1).epoch(0)
        )
        assert all(
            np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
            for a, b in zip(same, epoch0[0], strict=True)
        )


def test_evaluation_order_reads_every_row_once(etl_root: Path, client) -> None:
    manifest = stage_shards(SPEC, etl_root, "s3://shards/brake", client).manifest
    holdout = manifest["splits"]["holdout"]
    loader = ShardLoader(holdout["shards"], S3Source(client), channels=8, batch_size=64, shuffle=False)
    ys = np.concatenate([y for _, y in loader.epoch(0)])
    assert len(ys) == holdout["rows"]
    assert round(float(ys.mean()), 6) == holdout["positive_rate"]


def test_operator_stages_from_the_connection_and_is_idempotent(
    etl_root: Path,
    client,
    moto_endpoint: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import json

    from nuro_ml.operators.training_data import StageTrainingShardsOperator

    conn = {
        "conn_type": "aws",
        "login": "testing",
        "password": "s3cr3t-key",
        "extra": {"endpoint_url": moto_endpoint},
    }
    monkeypatch.setenv("AIRFLOW_CONN_SHARDS_S3", json.dumps(conn))
    op = StageTrainingShardsOperator(
        task_id="stage_training_shards",
        destination="s3://shards/op",
        start="2026-11-24T00:00:00+00:00",
        end="2026-11-25T00:00:00+00:00",
        end_is_exclusive=True,
        vehicles=VEHICLES,
        etl_root=str(etl_root),
        dataset={"shard_rows": 256},
        aws_conn_id="shards_s3",
    )
    first = op.execute({})
    assert first["uploaded_shards"] == sum(first["shards"].values()) and first["reused_shards"] == 0
    assert first["endpoint_url"] == moto_endpoint and "s3cr3t-key" not in json.dumps(first)
    assert load_manifest(first["manifest_uri"], client)["spec"]["shard_rows"] == 256
    second = op.execute({})
    assert second["manifest_uri"] == first["manifest_uri"] and second["uploaded_bytes"] == 0
