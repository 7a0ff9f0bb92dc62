"""Training input throughput: Ray Data over the shards through the NVMe cache, S3 and local disk.

Input layout: ``ego_motion`` of simulated drives (the ETL's own transform over the fleet
generator's kinematics) cut into 2 s windows (20 ticks x 8 channels, float32, stride 0.5 s) and
staged by ``stage_shards`` as uncompressed Parquet shards of ``--shard-rows`` windows each in a moto S3
server on loopback. All three sides run the input path the torch workload trains on: a Ray Data
dataset of the train shards (:func:`~nuro_ml.training_data.ray_data.shard_dataset`, one read
task per shard, rows permuted per shard) consumed by
:func:`~nuro_ml.training_data.ray_data.iter_training_batches` (``--batch-size`` windows, a
local shuffle buffer of ``--shuffle-buffer-batches`` batches, 4 by default) on a local Ray
instance of ``--cpus`` CPUs. Only the read tasks' shard source differs:

* ``train_input_epoch2``: ours reads through the NVMe shard cache after one epoch filled it
  (the second and later epochs), the reference reads every shard from the S3 server;
* ``train_input_vs_local``: ours (warm cache) against the shards already on local disk, the
  ceiling a cache can reach.

Each side runs one untimed warm-up epoch, then ``--epochs`` timed epochs taken in turns (one
epoch of each side per round, so all sides see the same machine load); the median samples/s is
reported; the cache's hit rate over the timed epochs, counted by the read tasks, is printed with
the first line. Each epoch is one Ray Data execution, so its fixed start-up cost is in every
side's figure. Note that the reference S3 here is a server on loopback, far closer than a real
bucket: on a loaded 2-core machine the Ray Data pipeline itself (execution start, block
transfer through the object store, batching), not the shard reads, sets the pace of all three
sides, and the ratios stay near 1. The cache's own speed-up over storage is measured without
Ray Data by ``benchmarks/features.py`` and ``benchmarks/gpu_train_check.py``.

Run: ``python -m benchmarks.training_io [--drives N] [--drive-seconds S] [--shard-rows N]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

from benchmarks.features import moto_server


def _line(name: str, ours: float, reference: float, unit: str) -> None:
    print(
        f"{name}: ours {ours:.4g} {unit}, reference {reference:.4g} {unit}, ratio {ours / reference:.2f}",
        flush=True,
    )


def _samples_per_s(dataset: Any, channels: int, batch_size: int, shuffle_buffer_batches: int) -> float:
    from nuro_ml.training_data.ray_data import iter_training_batches

    started = time.perf_counter()
    batches = iter_training_batches(
        dataset, channels=channels, batch_size=batch_size, shuffle_buffer_batches=shuffle_buffer_batches
    )
    samples = sum(len(y) for _, y in batches)
    return samples / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--drives", type=int, default=24)
    parser.add_argument("--drive-seconds", type=float, default=300.0)
    parser.add_argument("--shard-rows", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance")
    parser.add_argument(
        "--shuffle-buffer-batches", type=int, default=4, help="local shuffle buffer, in batches (0: off)"
    )
    args = parser.parse_args(argv)
    logging.disable(logging.INFO)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    import boto3
    import ray
    from nuro_ml.training_data.loader import ShardSourceConfig
    from nuro_ml.training_data.ray_data import ShardReadCounters, shard_dataset, window_bytes
    from nuro_ml.training_data.spec import DatasetSpec
    from nuro_ml.training_data.staging import stage_shards
    from nuro_ml.training_data.synthetic import write_ego_motion

    day = date(2026, 11, 24)
    vehicles = [f"veh-{i:03d}" for i in range(args.drives)]
    with tempfile.TemporaryDirectory(prefix="bench-training-io-") as tmp, moto_server() as endpoint:
        work = Path(tmp)
        write_ego_motion(work / "etl", [day], vehicles, drives_per_day=1, drive_seconds=args.drive_seconds)
        # Read tasks run in Ray's worker processes; they find the server's credentials here.
        os.environ.update(
            AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1"
        )
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="training")
        spec = DatasetSpec(start=day, end=day, shard_rows=args.shard_rows)
        manifest = stage_shards(spec, work / "etl", "s3://training/brake", s3).manifest
        shards = manifest["splits"]["train"]["shards"]
        channels = len(manifest["channels"])
        total_bytes = sum(s["bytes"] for s in shards)
        print(
            f"# layout: {len(shards)} train shards of {args.shard_rows} windows "
            f"(20 ticks x {channels} ch float32), {total_bytes / len(shards) / 1024:.0f} KiB each "
            f"Parquet, {manifest['splits']['train']['rows']} windows; moto S3 on loopback; "
            f"cache and local copy on {work}; Ray Data on a local Ray of {args.cpus} CPUs",
            flush=True,
        )
        local_dir = work / "local"
        local_dir.mkdir()
        for shard in shards:
            bucket, _, key = shard["uri"].removeprefix("s3://").partition("/")
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            (local_dir / shard["uri"].rsplit("/", 1)[-1]).write_bytes(body)

        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        try:
            ray.data.DataContext.get_current().enable_progress_bars = False
            counters = ShardReadCounters.remote()  # type: ignore[attr-defined]
            width = window_bytes(manifest)
            configs = {
                "ours": ShardSourceConfig(
                    cache_dir=str(work / "nvme"), cache_bytes=4 * total_bytes, s3_endpoint_url=endpoint
                ),
                "s3": ShardSourceConfig(s3_endpoint_url=endpoint, direct=True),
                "local": ShardSourceConfig(local_shards=str(local_dir)),
            }
            datasets = {
                name: shard_dataset(
                    shards, config, window_bytes=width, counters=counters if name == "ours" else None
                )
                for name, config in configs.items()
            }

            def epoch(dataset: Any) -> float:
                return _samples_per_s(dataset, channels, args.batch_size, args.shuffle_buffer_batches)

            for dataset in datasets.values():  # warm-up: fills the cache on ours
                epoch(dataset)
            before = ray.get(counters.totals.remote())
            rates: dict[str, list[float]] = {name: [] for name in datasets}
            for _ in range(args.epochs):
                for name, dataset in datasets.items():
                    rates[name].append(epoch(dataset))
            after = ray.get(counters.totals.remote())
        finally:
            ray.shutdown()
        hits, misses = after["hits"] - before["hits"], after["misses"] - before["misses"]
        remote = after["bytes_from_remote"] - before["bytes_from_remote"]
        ours, reference, ceiling = (statistics.median(rates[k]) for k in ("ours", "s3", "local"))

        print(
            f"# train_input_epoch2: cache hit rate {hits / max(1, hits + misses):.3f} over epochs "
            f"2..{args.epochs + 1} ({hits} hits, {misses} misses, {remote} bytes from S3)",
            flush=True,
        )
        _line("train_input_epoch2", ours, reference, "samples/s")
        _line("train_input_vs_local", ours, ceiling, "samples/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
