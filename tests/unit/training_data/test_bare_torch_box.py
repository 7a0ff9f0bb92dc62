"""The model, training step, loader and cache run where only torch, numpy and pyarrow exist."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.fixtures.torch_support import require_torch

REPO = Path(__file__).resolve().parents[3]

SCRIPT = textwrap.dedent(
    """
    import sys
    # What a bare GPU box lacks: importing any of these must fail, as it would there.
    for name in ("airflow", "ray", "boto3", "botocore", "moto", "pyspark", "feast"):
        sys.modules[name] = None
    sys.path[:0] = [sys.argv[1] + "/providers", sys.argv[1] + "/workloads"]
    from datetime import date
    import torch
    from brake_model import BrakeEventNet, fit_logistic, predict, train_step
    from nuro_ml.features.nvme_cache import ShardCache
    from nuro_ml.training_data.loader import CachedS3Source, ShardLoader
    from nuro_ml.training_data.scoring import binary_metrics
    assert "pandas" not in sys.modules, "scoring on a bare box must not need pandas"
    from nuro_ml.training_data.object_store import DirectoryObjectStore
    from nuro_ml.training_data.spec import DatasetSpec
    from nuro_ml.training_data.staging import stage_shards
    from nuro_ml.training_data.synthetic import write_ego_motion

    work = sys.argv[2]
    day = date(2026, 11, 24)
    write_ego_motion(work + "/etl", [day], ["veh-1", "veh-2", "veh-3"], drives_per_day=1, drive_seconds=120.0)
    store = DirectoryObjectStore(work + "/storage")
    spec = DatasetSpec(start=day, end=day, shard_rows=128)
    manifest = stage_shards(spec, work + "/etl", "s3://b/p", store).manifest
    train, holdout = manifest["splits"]["train"]["shards"], manifest["splits"]["holdout"]["shards"]
    norm = manifest["normalisation"]
    cache = ShardCache(work + "/nvme", capacity_bytes=1 << 30, s3_client=store)
    loader = ShardLoader(train, CachedS3Source(cache), channels=8, batch_size=64)
    torch.manual_seed(0)
    model = BrakeEventNet(8, norm["mean"], norm["std"])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    cpu = torch.device("cpu")
    losses = [train_step(model, opt, x, y, cpu) for epoch in range(3) for x, y in loader.epoch(epoch)]
    assert losses[-1] < losses[0], (losses[0], losses[-1])
    assert cache.stats.misses == len(train), cache.stats
    test = ShardLoader(holdout, CachedS3Source(cache), channels=8, batch_size=256, shuffle=False)
    print("auc", binary_metrics(*predict(model, test.epoch(0), cpu))["auc"])
    """
)


def test_training_step_and_cached_loader_without_airflow_ray_or_boto3(tmp_path: Path) -> None:
    require_torch()
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(REPO), str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    auc = float(done.stdout.split("auc")[-1])
    assert auc > 0.8
