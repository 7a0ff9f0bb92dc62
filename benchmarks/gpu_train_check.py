"""GPU training check: the plain-PyTorch training step fed through the NVMe cache vs from storage.

Meant for a GPU box that has PyTorch, numpy and pyarrow but no Ray, Airflow or boto3, and runs on
CPU anywhere else. It imports only this repository's ``nuro_ml.training_data``,
``nuro_ml.features.nvme_cache``, ``nuro_ml.etl.kinematics``/``transforms`` and
``workloads/brake_model.py``.

Input layout: simulated drives' ``ego_motion`` cut into 2 s windows (20 ticks x 8 channels
float32), staged as uncompressed Parquet shards of ``--shard-rows`` windows into ``--storage``
(a directory standing for the shared storage the nodes mount: point it at NFS/Lustre/a mounted
bucket for a meaningful reference; a local directory makes the reference as fast as the page
cache allows). Both sides run the same :class:`ShardLoader` and the same training step
(``BrakeEventNet``, Adam, batch ``--batch-size``) on the same device; only the shard source
differs:

* ours: the NVMe :class:`ShardCache` (``--cache-dir``), warmed by one epoch;
* reference: every shard read from ``--storage`` on every epoch.

Epochs alternate between the sides. The GPU's utilisation is sampled with ``nvidia-smi`` during
the timed epochs. Prints ``gpu_train_epoch2: ours X samples/s, reference Y samples/s, ratio Z``
and the device line.

Run: ``python benchmarks/gpu_train_check.py [--storage DIR] [--drives N] [--epochs N]``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
for entry in (REPO / "providers", REPO / "workloads"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))


class GpuSampler:
    """Mean GPU utilisation (%) between start() and stop(), from nvidia-smi; None without it."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.available = shutil.which("nvidia-smi") is not None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(
                    ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", "0"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                    check=True,
                ).stdout
                self.samples.append(float(out.strip().splitlines()[0]))
            except (subprocess.SubprocessError, ValueError, IndexError):
                self.available = False
                return
            self._stop.wait(self.interval)

    def start(self) -> None:
        if self.available:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()

    def stop(self) -> float | None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        return statistics.mean(self.samples) if self.samples else None


def train_epoch(model: Any, optimizer: Any, loader: Any, epoch: int, device: Any) -> tuple[int, float]:
    import torch
    from brake_model import train_step

    started = time.perf_counter()
    samples = 0
    for x, y in loader.epoch(epoch):
        train_step(model, optimizer, x, y, device)
        samples += len(y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return samples, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--storage", default=None, help="shared-storage directory for the shards (default: temp)"
    )
    parser.add_argument("--cache-dir", default=None, help="NVMe cache directory (default: temp)")
    parser.add_argument("--drives", type=int, default=16)
    parser.add_argument("--drive-seconds", type=float, default=300.0)
    parser.add_argument("--shard-rows", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per side")
    parser.add_argument("--cpu", action="store_true", help="stay on CPU even when CUDA is present")
    args = parser.parse_args(argv)

    import logging

    import torch
    from brake_model import BrakeEventNet, pick_device
    from nuro_ml.features.nvme_cache import ShardCache
    from nuro_ml.training_data.loader import CachedS3Source, S3Source, ShardLoader
    from nuro_ml.training_data.object_store import DirectoryObjectStore
    from nuro_ml.training_data.spec import DatasetSpec
    from nuro_ml.training_data.staging import stage_shards
    from nuro_ml.training_data.synthetic import write_ego_motion

    logging.basicConfig(level=logging.WARNING)
    device = pick_device(prefer_cuda=not args.cpu)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    day = date(2026, 11, 24)
    with tempfile.TemporaryDirectory(prefix="gpu-train-check-") as tmp:
        work = Path(tmp)
        store = DirectoryObjectStore(args.storage or work / "storage")
        write_ego_motion(
            work / "etl",
            [day],
            [f"veh-{i:03d}" for i in range(args.drives)],
            drives_per_day=1,
            drive_seconds=args.drive_seconds,
        )
        spec = DatasetSpec(start=day, end=day, shard_rows=args.shard_rows)
        manifest = stage_shards(spec, work / "etl", "s3://training/brake", store).manifest
        shards = manifest["splits"]["train"]["shards"]
        channels, norm = len(manifest["channels"]), manifest["normalisation"]
        cache = ShardCache(args.cache_dir or work / "nvme", capacity_bytes=1 << 34, s3_client=store)

        def side(source: Any) -> tuple[ShardLoader, Any, Any]:
            torch.manual_seed(0)
            model = BrakeEventNet(channels, norm["mean"], norm["std"]).to(device)
            optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
            return (
                ShardLoader(shards, source, channels=channels, batch_size=args.batch_size, seed=1),
                model,
                optimizer,
            )

        sides = {"cache": side(CachedS3Source(cache)), "storage": side(S3Source(store))}
        for loader, model, optimizer in sides.values():
            train_epoch(model, optimizer, loader, 0, device)  # warms the cache, CUDA kernels, allocator
        hits_before, misses_before = cache.stats.hits, cache.stats.misses
        rates: dict[str, list[float]] = {k: [] for k in sides}
        utilisation: dict[str, list[float]] = {k: [] for k in sides}
        for epoch in range(1, args.epochs + 1):
            for key, (loader, model, optimizer) in sides.items():
                sampler = GpuSampler()
                sampler.start()
                samples, seconds = train_epoch(model, optimizer, loader, epoch, device)
                util = sampler.stop()
                rates[key].append(samples / seconds)
                if util is not None:
                    utilisation[key].append(util)
        ours, reference = statistics.median(rates["cache"]), statistics.median(rates["storage"])
        util_text = ", ".join(
            f"{k} {statistics.mean(v):.0f}%" if v else f"{k} n/a" for k, v in utilisation.items()
        )
        hits, misses = cache.stats.hits - hits_before, cache.stats.misses - misses_before
        print(
            f"# device: {name} (torch {torch.__version__}); {len(shards)} shards x {args.shard_rows} "
            f"windows, batch {args.batch_size}; GPU utilisation: {util_text}; cache hit rate over the "
            f"timed epochs {hits / max(1, hits + misses):.3f}",
            flush=True,
        )
        print(
            f"gpu_train_epoch2: ours {ours:.4g} samples/s, reference {reference:.4g} samples/s, "
            f"ratio {ours / reference:.2f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
