"""Train the hard-brake event detector with PyTorch on Ray Train (``TorchTrainer``).

Submitted through the Ray Jobs API with this directory as the job's ``working_dir``, or run by
hand against any Ray cluster (``RAY_ADDRESS``)::

    python train_torch.py --manifest s3://bucket/prefix/manifests/<sha>.json --output-dir /data/run1

The manifest comes from :func:`nuro_ml.training_data.staging.stage_shards` (the
``StageTrainingShardsOperator``). ``--num-workers`` workers train one model with
DistributedDataParallel: NCCL on CUDA when the workers get GPUs (``--use-gpu``), gloo on CPU
otherwise, from the same code. Every worker reads its shards through the node's NVMe shard cache
(``--cache-dir``), so from the second epoch on, and for a second job on the same node, reads are
local. Each epoch ends with a checkpoint under ``--storage-path``; a worker that dies is replaced
and the group resumes from the latest checkpoint (``--max-failures``), and a run resubmitted under
the same ``--run-name`` resumes too. The driver then scores the held-out drives with the network
and with a logistic-regression baseline fitted on the same inputs, writes ``model.pt`` and
``metrics.json`` to ``--output-dir`` and prints the ``NURO_ML_RESULT <json>`` line the operator
returns through XCom. S3 endpoint and credentials come from the standard AWS environment
variables (``AWS_ENDPOINT_URL_S3``, ``AWS_ACCESS_KEY_ID``...).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

# Run as a script from this directory (a Ray job's working_dir), like its sibling workload: the
# same atomic artifact writes and the same result line the operator parses.
from train_xgboost import _write_atomically, result_line, training_run_name

if TYPE_CHECKING:
    from nuro_ml.progress import Progress

log = logging.getLogger("nuro_ml.workloads.train_torch")

MODEL_FILENAME = "model.pt"
METRICS_FILENAME = "metrics.json"
CHECKPOINT_FILENAME = "state.pt"
BASELINE_NAME = "logistic_regression"
PRIMARY_METRIC = "average_precision"
DEFAULT_CACHE_DIR = "/tmp/nuro-ml-shard-cache"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--manifest", required=True, help="training-shard manifest (s3:// URI or local file)")
    parser.add_argument(
        "--local-shards", default=None, help="read shards from this local directory instead of object storage"
    )
    parser.add_argument(
        "--cache-dir",
        default=os.environ.get("NURO_ML_SHARD_CACHE", DEFAULT_CACHE_DIR),
        help="NVMe shard cache directory on every node",
    )
    parser.add_argument("--cache-bytes", type=int, default=8 << 30, help="shard cache capacity per node")
    parser.add_argument(
        "--s3-endpoint-url",
        default=None,
        help="S3 API endpoint (MinIO, Ceph...); default: AWS_ENDPOINT_URL_S3 or AWS itself",
    )
    parser.add_argument("--output-dir", default=None, help="where model.pt and metrics.json go")
    parser.add_argument("--storage-path", default=None, help="Ray Train checkpoint storage")
    parser.add_argument("--run-name", default=None, help="Ray Train run name; same name resumes")
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument(
        "--use-gpu",
        choices=("auto", "yes", "no"),
        default="auto",
        help="train on CUDA with NCCL (auto: when the cluster has GPUs and torch sees CUDA)",
    )
    parser.add_argument(
        "--gpus-per-worker",
        type=float,
        default=0.0,
        help="logical GPUs each worker reserves on a CPU-only cluster (admission only)",
    )
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--max-failures", type=int, default=2, help="worker-group restarts Ray Train may do")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    if args.num_workers < 1:
        parser.error("--num-workers must be at least 1")
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    return args


def s3_client(endpoint_url: str | None = None) -> Any:
    import boto3

    # Without an explicit endpoint boto3 reads AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL; credentials
    # always come from the environment (the operator sets them from an Airflow connection).
    return boto3.client("s3", endpoint_url=endpoint_url) if endpoint_url else boto3.client("s3")


def shard_source(config: dict[str, Any]) -> Any:
    from nuro_ml.training_data.loader import CachedS3Source, LocalSource

    if config.get("local_shards"):
        return LocalSource(config["local_shards"])
    from nuro_ml.features.nvme_cache import ShardCache

    cache = ShardCache(
        config["cache_dir"],
        capacity_bytes=config["cache_bytes"],
        s3_client=s3_client(config.get("s3_endpoint_url")),
    )
    return CachedS3Source(cache)


def _counters(source: Any) -> np.ndarray:
    stats = source.stats()
    return np.array(
        [stats.get("bytes_from_remote", 0), stats.get("hits", 0), stats.get("misses", 0)], dtype=np.float64
    )


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Runs in every Ray Train worker: DDP over this worker's shards, a checkpoint per epoch."""
    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist
    from brake_model import BrakeEventNet, train_step
    from nuro_ml.progress import Progress
    from nuro_ml.training_data.loader import ShardLoader

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    manifest = config["manifest"]
    channels = len(manifest["channels"])
    norm = manifest["normalisation"]
    torch.manual_seed(config["seed"])
    model = BrakeEventNet(channels, norm["mean"], norm["std"])
    optimizer = torch.optim.Adam(model.parameters(), lr=config["learning_rate"])
    start_epoch, history, resumed_from = 0, [], None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = torch.load(Path(directory) / CHECKPOINT_FILENAME, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, history = state["epoch"] + 1, state["history"]
        resumed_from = state["epoch"]
        print(
            f"worker {rank}/{world}: resuming after epoch {resumed_from} from {checkpoint.path}", flush=True
        )
    model = ray.train.torch.prepare_model(model)
    source = shard_source(config)
    loader = ShardLoader(
        manifest["splits"]["train"]["shards"],
        source,
        channels=channels,
        batch_size=config["batch_size"],
        rank=rank,
        world_size=world,
        seed=config["seed"],
    )
    # Rank 0 speaks for the group: every rank runs the same steps in lockstep (DDP).
    epochs = Progress("Epochs", config["epochs"], unit="epochs", done=start_epoch, emit=_print_line)
    for epoch in range(start_epoch, config["epochs"]):
        before = _counters(source)
        started = time.monotonic()
        steps = Progress(
            f"Epoch {epoch + 1}/{config['epochs']}",
            loader.batches_per_epoch(epoch) if loader.shuffle else None,
            unit="steps",
            emit=_print_line if rank == 0 else _quiet,
        )
        losses = run_steps(
            loader.epoch(epoch), lambda x, y: train_step(model, optimizer, x, y, device), steps
        )
        elapsed = time.monotonic() - started
        # Sum the input counters of every worker, so rank 0 reports the whole group's reads.
        totals = torch.tensor(
            np.append(_counters(source) - before, len(losses) * config["batch_size"]), device=device
        )
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(totals)
        remote_bytes, hits, misses, samples = (float(v) for v in totals.cpu().tolist())
        entry = {
            "epoch": epoch,
            "loss": float(np.mean(losses)) if losses else None,
            "samples": int(samples),
            "samples_per_s": round(samples / elapsed, 1) if elapsed > 0 else None,
            "remote_bytes": int(remote_bytes),
            "cache_hits": int(hits),
            "cache_misses": int(misses),
            "cache_hit_rate": round(hits / (hits + misses), 4) if hits + misses else None,
        }
        history = [*history, entry]
        metrics = {**entry, "history": history, "resumed_from_epoch": resumed_from, "world_size": world}
        with tempfile.TemporaryDirectory() as tmp:
            if rank == 0:
                unwrapped: Any = model.module if hasattr(model, "module") else model
                torch.save(
                    {
                        "model": unwrapped.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "epoch": epoch,
                        "history": history,
                    },
                    Path(tmp) / CHECKPOINT_FILENAME,
                )
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
            else:
                ray.train.report(metrics)
        print(f"worker {rank}/{world}: epoch {epoch} {json.dumps(entry)}", flush=True)
        if rank == 0:
            loss = "n/a" if entry["loss"] is None else f"{entry['loss']:.4f}"
            # One line per epoch (epochs are long); the last one is the final line.
            if epoch + 1 < config["epochs"]:
                epochs.update(epoch + 1, force=True, loss=loss, samples_per_s=entry["samples_per_s"])
            else:
                epochs.done = epoch + 1
                epochs.finish(loss=loss, samples_per_s=entry["samples_per_s"])


def run_steps(
    batches: Iterable[tuple[np.ndarray, np.ndarray]],
    step: Callable[[np.ndarray, np.ndarray], float],
    progress: Progress,
) -> list[float]:
    """Run ``step`` on every batch; ``progress`` reports steps done, their rate and the latest loss."""
    losses = []
    for x, y in batches:
        losses.append(step(x, y))
        progress.advance(loss=f"{losses[-1]:.4f}")
    progress.finish()
    return losses


def _print_line(line: str) -> None:
    print(line, flush=True)


def _quiet(line: str) -> None:
    return None


def _use_gpu(args: argparse.Namespace) -> bool:
    if args.use_gpu != "auto":
        return bool(args.use_gpu == "yes")
    import ray
    import torch

    return bool(ray.cluster_resources().get("GPU", 0) >= args.num_workers and torch.cuda.is_available())


def fit(
    args: argparse.Namespace, manifest: dict[str, Any], *, run_name: str, storage_path: Path
) -> tuple[Any, dict[str, Any]]:
    """Run the distributed training; return the final checkpoint and the last reported metrics."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    if not ray.is_initialized():
        ray.init(log_to_driver=True)
    use_gpu = _use_gpu(args)
    resources: dict[str, float] = {"CPU": args.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = max(1.0, args.gpus_per_worker)
    elif args.gpus_per_worker > 0:
        # Logical GPUs of a CPU-only cluster: the reservation gates admission and placement.
        resources["GPU"] = args.gpus_per_worker
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "manifest": manifest,
            "local_shards": args.local_shards,
            "cache_dir": args.cache_dir,
            "cache_bytes": args.cache_bytes,
            "s3_endpoint_url": args.s3_endpoint_url,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
            "seed": args.seed,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=args.num_workers, use_gpu=use_gpu, resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            name=run_name,
            storage_path=str(storage_path),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            failure_config=ray.train.FailureConfig(max_failures=args.max_failures),
        ),
    )
    result = trainer.fit()
    error = getattr(result, "error", None)
    if isinstance(error, BaseException):
        raise error
    if result.checkpoint is None:
        raise RuntimeError(f"Ray Train run {run_name!r} finished without a checkpoint under {storage_path}")
    return result.checkpoint, dict(result.metrics or {})


def read_split(
    manifest: dict[str, Any], split: str, source: Any, batch_size: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    from nuro_ml.training_data.loader import ShardLoader

    loader = ShardLoader(
        manifest["splits"][split]["shards"],
        source,
        channels=len(manifest["channels"]),
        batch_size=batch_size,
        shuffle=False,
    )
    xs, ys = zip(*loader.epoch(0), strict=True)
    return np.concatenate(xs), np.concatenate(ys)


def evaluate(manifest: dict[str, Any], checkpoint: Any, source: Any, seed: int) -> dict[str, Any]:
    """Score the held-out drives with the trained network and the logistic-regression baseline."""
    import torch
    from brake_model import BrakeEventNet, binary_metrics, fit_logistic, predict

    torch.manual_seed(seed)
    norm = manifest["normalisation"]
    channels = len(manifest["channels"])
    with checkpoint.as_directory() as directory:
        state = torch.load(Path(directory) / CHECKPOINT_FILENAME, map_location="cpu", weights_only=False)
    model = BrakeEventNet(channels, norm["mean"], norm["std"])
    model.load_state_dict(state["model"])
    cpu = torch.device("cpu")
    x_test, y_test = read_split(manifest, "holdout", source)
    x_train, y_train = read_split(manifest, "train", source)
    ours = binary_metrics(*predict(model, [(x_test, y_test)], cpu))
    baseline = binary_metrics(
        *predict(fit_logistic(x_train, y_train, norm["mean"], norm["std"]), [(x_test, y_test)], cpu)
    )
    beats = ours[PRIMARY_METRIC] is not None and ours[PRIMARY_METRIC] > (baseline[PRIMARY_METRIC] or 0.0)
    return {
        "model": ours,
        "baseline": {"name": BASELINE_NAME, **baseline},
        "primary_metric": PRIMARY_METRIC,
        "beats_baseline": bool(beats),
        "holdout_drives": manifest["splits"]["holdout"]["drives"],
        "state": state,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    import io

    import torch
    from nuro_ml.training_data.staging import load_manifest

    started = time.monotonic()
    run_name = training_run_name(args.run_name, "torch")
    if args.output_dir:
        output_dir = Path(args.output_dir).resolve()
    else:
        from nuro_ml import settings

        output_dir = (settings.artifacts_dir() / run_name).resolve()
    storage_path = Path(args.storage_path).resolve() if args.storage_path else output_dir / "checkpoints"
    manifest = load_manifest(args.manifest, None if args.local_shards else s3_client(args.s3_endpoint_url))
    checkpoint, last = fit(args, manifest, run_name=run_name, storage_path=storage_path)
    source = shard_source(
        {
            "local_shards": args.local_shards,
            "cache_dir": args.cache_dir,
            "cache_bytes": args.cache_bytes,
            "s3_endpoint_url": args.s3_endpoint_url,
        }
    )
    evaluation = evaluate(manifest, checkpoint, source, args.seed)
    state = evaluation.pop("state")
    history = state["history"]
    epoch_io = {
        "first_epoch_remote_bytes": history[0]["remote_bytes"] if history else None,
        "last_epoch_remote_bytes": history[-1]["remote_bytes"] if history else None,
        "last_epoch_cache_hit_rate": history[-1]["cache_hit_rate"] if history else None,
    }
    metrics: dict[str, Any] = {
        **evaluation,
        "epochs": len(history),
        "history": history,
        "resumed_from_epoch": last.get("resumed_from_epoch"),
        "input": {**epoch_io, "driver_source": source.stats()},
        "train_rows": manifest["splits"]["train"]["rows"],
        "holdout_rows": manifest["splits"]["holdout"]["rows"],
    }
    buffer = io.BytesIO()
    torch.save({"model": state["model"], "manifest": args.manifest, "channels": manifest["channels"]}, buffer)
    model_path, metrics_path = output_dir / MODEL_FILENAME, output_dir / METRICS_FILENAME
    metrics_doc = {
        "metrics": metrics,
        "run_name": run_name,
        "manifest": args.manifest,
        "num_workers": args.num_workers,
    }
    _write_atomically(
        {
            model_path: buffer.getvalue(),
            metrics_path: (
                json.dumps(metrics_doc, indent=2, sort_keys=True, allow_nan=False) + "\n"
            ).encode(),
        }
    )
    log.info(
        "Held-out %s: ours %.4f, %s %.4f; shard cache %s",
        PRIMARY_METRIC,
        metrics["model"][PRIMARY_METRIC] or float("nan"),
        BASELINE_NAME,
        metrics["baseline"][PRIMARY_METRIC] or float("nan"),
        json.dumps(epoch_io),
    )
    return {
        "metrics": {
            k: metrics[k]
            for k in (
                "model",
                "baseline",
                "primary_metric",
                "beats_baseline",
                "epochs",
                "resumed_from_epoch",
                "input",
            )
        },
        "artifact_uri": model_path.as_uri(),
        "metrics_uri": metrics_path.as_uri(),
        "output_dir": str(output_dir),
        "checkpoint_path": checkpoint.path,
        "run_name": run_name,
        "num_workers": args.num_workers,
        "duration_s": round(time.monotonic() - started, 3),
    }


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(message)s")
    result = run(parse_args(argv))
    print(result_line(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
