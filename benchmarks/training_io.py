"""Training input throughput: the shard loader through the NVMe cache vs straight from S3 and local disk.

Input layout: ``ego_motion`` of simulated drives (the ETL's own transform over the fleet
generator's kinematics) cut into 2 s windows (20 ticks x 8 channels, float32, stride 0.5 s) and
staged by ``stage_shards`` as uncompressed Parquet shards of ``--shard-rows`` windows each in a moto S3
server on loopback. All three sides run the same :class:`ShardLoader` (one rank, shuffled,
``--batch-size`` windows per batch) over the same train shards and only the source differs:

* ``train_input_epoch2``: ours reads through the NVMe shard cache after one epoch filled it
  (the second and later epochs), the reference reads every shard from the S3 server;
* ``train_input_vs_local``: ours (warm cache) against the shards already on local disk, the
  ceiling a cache can reach.

Each side runs one untimed warm-up epoch, then ``--epochs`` timed epochs taken in turns (one
epoch of each side per round, so all sides see the same machine load); the median samples/s is
reported; the cache's hit rate over the timed epochs is printed with the first line. Note that
the reference S3 here is a server on loopback, far closer than a real bucket.

Run: ``python -m benchmarks.training_io [--drives N] [--drive-seconds S] [--shard-rows N]``.
"""

from __future__ import annotations

import argparse
import logging
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


def _samples_per_s(loader: Any, epoch: int) -> float:
    started = time.perf_counter()
    samples = sum(len(y) for _, y in loader.epoch(epoch))
    return samples / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--drives", type=int, default=24)
    parser.add_argument("--drive-seconds", type=float, default=300.0)
    parser.add_argument("--shard-rows", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args(argv)
    logging.disable(logging.INFO)

    import boto3
    from nuro_ml.features.nvme_cache import ShardCache
    from nuro_ml.training_data.loader import CachedS3Source, LocalSource, S3Source, ShardLoader
    from nuro_ml.training_data.spec import DatasetSpec
    from nuro_ml.training_data.staging import stage_shards
    from nuro_ml.training_data.synthetic import write_ego_motion

    day = date(2026, 11, 24)
    vehicles = [f"veh-{i:03d}" for i in range(args.drives)]
    with tempfile.TemporaryDirectory(prefix="bench-training-io-") as tmp, moto_server() as endpoint:
        work = Path(tmp)
        write_ego_motion(work / "etl", [day], vehicles, drives_per_day=1, drive_seconds=args.drive_seconds)
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        )
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
            f"cache and local copy on {work}",
            flush=True,
        )

        def loader(source: Any) -> ShardLoader:
            return ShardLoader(shards, source, channels=channels, batch_size=args.batch_size, seed=1)

        cache = ShardCache(work / "nvme", capacity_bytes=4 * total_bytes, s3_client=s3)
        cached = loader(CachedS3Source(cache))
        list(cached.epoch(0))  # epoch 1 fills the cache
        local_dir = work / "local"
        local_dir.mkdir()
        for shard in shards:
            (local_dir / shard["uri"].rsplit("/", 1)[-1]).write_bytes(cache.read_bytes(shard["uri"]))
        direct, local = loader(S3Source(s3)), loader(LocalSource(local_dir))
        list(direct.epoch(0))
        list(local.epoch(0))
        hits_before, misses_before = cache.stats.hits, cache.stats.misses
        remote_before = cache.stats.bytes_from_remote
        rates: dict[str, list[float]] = {"ours": [], "s3": [], "local": []}
        for epoch in range(1, args.epochs + 1):
            for name, side in (("ours", cached), ("s3", direct), ("local", local)):
                rates[name].append(_samples_per_s(side, epoch))
        hits = cache.stats.hits - hits_before
        misses = cache.stats.misses - misses_before
        remote = cache.stats.bytes_from_remote - remote_before
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
