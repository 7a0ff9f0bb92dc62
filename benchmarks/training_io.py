"""Training input throughput: Ray Data over the shards through the NVMe cache, S3 and local disk.

Input layout: ``ego_motion`` of ``--drives`` simulated drives of ``--drive-seconds`` each (the
ETL's own transform over the fleet generator's kinematics) cut into 2 s windows (20 ticks x 8
channels, float32: 640 bytes a window, stride 0.5 s) and staged by ``stage_shards`` as
uncompressed Parquet shards of ``--shard-rows`` windows each in a moto S3 server (its own process)
on loopback (defaults: 768 drives of 300 s, 1024-window shards: 336 train shards of ~650 KiB,
343,872 windows, 220 MB an epoch; 64 hours of driving, still a small training set, where a few
shards would measure mostly the epoch's fixed start-up). All three sides run the input path the torch
workload trains on: a Ray Data dataset of the train shards
(:func:`~nuro_ml.training_data.ray_data.shard_dataset`: one read task per CPU by default,
``--read-tasks`` to set it, each gathering its shards into blocks whose rows it permutes) consumed
by :func:`~nuro_ml.training_data.ray_data.iter_training_batches` (``--batch-size`` windows as
writable float32 arrays, Ray Data's local shuffle buffer off unless ``--shuffle-buffer-batches``)
on a local Ray instance of ``--cpus`` CPUs. Only the read tasks' shard source differs:

* ``train_input_epoch2``: ours reads through the NVMe shard cache after one epoch filled it
  (the second and later epochs), the reference reads every shard from the S3 server (one whole
  GET per shard, as the cache's fill does);
* ``train_input_vs_local``: ours (warm cache) against the shards already on local disk, the
  ceiling a cache can reach.

Each side runs one untimed warm-up epoch, then ``--epochs`` timed epochs taken in turns (one
epoch of each side per round, each round starting with the next side, so all sides see the same
machine load and none always follows the same one); the median samples/s is
reported; the cache's hit rate over the timed epochs, counted by the read tasks, is printed with
the first line. Each epoch is one Ray Data execution, so its fixed start-up cost is in every
side's figure.

What bounds each side: the cache and local sides read at memory speed; their epoch is Ray
Data's own cost: a fixed part per execution (starting the streaming executor, scheduling the
read tasks, about 50 ms on a loaded 2-core machine) and moving the blocks through the object
store to the consumer and batching them, together about 700 MB/s (1.0e6-1.1e6 windows/s) on two
cores at the default size. The S3 side adds the GETs: each read task fetches its shards one after
the other (one whole object per shard, as the cache's fill does) from a moto server in its own
process, which serves ~100-150 MB/s of these objects with two clients on this machine. The ratio
is therefore about one plus the pipeline's rate over the server's, and it grows with the epoch
as the fixed part weighs less; measured on one 2-core machine (load average 1.2-1.6):

=================  ==========  ===================  =====================
train shards       epoch       train_input_epoch2   train_input_vs_local
=================  ==========  ===================  =====================
11 (24 drives)     7 MB        1.89                 0.98
42 (96 drives)     27 MB       3.65                 1.02
168 (384 drives)   110 MB      5.36, 4.90, 4.80     0.87, 0.77, 0.97
336 (768 drives)   220 MB      6.24, 7.07           0.91, 1.02
=================  ==========  ===================  =====================

A real bucket, with tens of milliseconds per request instead of a few, widens it. The cache's own
speed-up over storage without Ray Data is measured by ``benchmarks/features.py`` and
``benchmarks/gpu_train_check.py``.

Run: ``python -m benchmarks.training_io [--drives N] [--drive-seconds S] [--shard-rows N]
[--read-tasks N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def moto_process(log: Path) -> Iterator[str]:
    """A moto S3 server in its own process on loopback, as a storage endpoint is: a server thread
    inside this process would share its interpreter lock with the batches' consumer."""
    from nuro_ml.local_cluster.processes import free_port, port_open, spawn, stop_group

    port = free_port()
    server = spawn(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], env=os.environ, log=log
    )
    try:
        deadline = time.monotonic() + 120
        while not port_open(port):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto server on port {port} did not start; see {log}")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_group(server.pid)


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
    parser.add_argument("--drives", type=int, default=768)
    parser.add_argument("--drive-seconds", type=float, default=300.0)
    parser.add_argument("--shard-rows", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance")
    parser.add_argument(
        "--shuffle-buffer-batches", type=int, default=0, help="local shuffle buffer, in batches (0: off)"
    )
    parser.add_argument(
        "--read-tasks", type=int, default=None, help="read tasks per epoch (default: the loader's choice)"
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
    with (
        tempfile.TemporaryDirectory(prefix="bench-training-io-") as tmp,
        moto_process(Path(tmp) / "moto.log") as endpoint,
    ):
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
            f"cache and local copy on {work}; Ray Data on a local Ray of {args.cpus} CPUs, "
            f"{args.read_tasks or 'one per CPU'} read tasks, batches of {args.batch_size}",
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
                    shards,
                    config,
                    window_bytes=width,
                    counters=counters if name == "ours" else None,
                    read_tasks=args.read_tasks,
                )
                for name, config in configs.items()
            }

            def epoch(dataset: Any) -> float:
                return _samples_per_s(dataset, channels, args.batch_size, args.shuffle_buffer_batches)

            for dataset in datasets.values():  # warm-up: fills the cache on ours
                epoch(dataset)
            before = ray.get(counters.totals.remote())
            rates: dict[str, list[float]] = {name: [] for name in datasets}
            names = list(datasets)
            for round_ in range(args.epochs):
                # Each round starts with another side, so no side always follows the same one.
                for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                    rates[name].append(epoch(datasets[name]))
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
