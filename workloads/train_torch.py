"""Train the hard-brake event detector with PyTorch on Ray Train (``TorchTrainer``).

Submitted through the Ray Jobs API with this directory as the job's ``working_dir``, or run by
hand against any Ray cluster (``RAY_ADDRESS``)::

    python train_torch.py --manifest s3://bucket/prefix/manifests/<sha>.json --output-dir /data/run1

The manifest comes from :func:`nuro_ml.training_data.staging.stage_shards` (the
``StageTrainingShardsOperator``). ``--num-workers`` workers train one model with
DistributedDataParallel: NCCL on CUDA when the workers get GPUs (``--use-gpu``), gloo on CPU
otherwise, from the same code. The train split is a Ray Data dataset
(:func:`nuro_ml.training_data.ray_data.shard_dataset`) that Ray Train splits among the workers;
its read tasks open every shard through the NVMe shard cache (``--cache-dir``) of the shard's home
node, where they run, so from the second epoch on, and for a second job on the same nodes, reads
are local. Each epoch's
cache hits, misses and bytes from object storage go into the reported metrics and
``metrics.json``. Each epoch ends with a checkpoint under ``--storage-path``; a worker that dies is replaced
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


def source_config(args: argparse.Namespace) -> Any:
    """How every process (driver, Ray Data read tasks) opens the shards."""
    from nuro_ml.training_data.loader import ShardSourceConfig

    return ShardSourceConfig(
        cache_dir=args.cache_dir,
        cache_bytes=args.cache_bytes,
        s3_endpoint_url=args.s3_endpoint_url,
        local_shards=args.local_shards,
    )


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Runs in every Ray Train worker: DDP over this worker's split of the shard dataset, a
    checkpoint per epoch."""
    import ray
    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist
    from brake_model import BrakeEventNet, train_step
    from nuro_ml.progress import Progress
    from nuro_ml.training_data.ray_data import epoch_input, iter_training_batches

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    # Logical GPUs (a CPU cluster's reservation) are GPUs to Ray but not to torch: train on CPU.
    device = ray.train.torch.get_device() if config["use_cuda"] else torch.device("cpu")
    manifest = config["manifest"]
    channels = len(manifest["channels"])
    norm = manifest["normalisation"]
    counters = config["counters"]
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
    model = ray.train.torch.prepare_model(model, move_to_device=device)
    shard = ray.train.get_dataset_shard("train")
    # Rank 0 speaks for the group: every rank runs the same steps in lockstep (DDP).
    epochs = Progress("Epochs", config["epochs"], unit="epochs", done=start_epoch, emit=_print_line)
    for epoch in range(start_epoch, config["epochs"]):
        # Ray Data starts an epoch's reads only once every worker has asked for it, and a worker's
        # iterator ends only when all of the epoch's reads are done: snapshots taken between the
        # all-reduce below and the next epoch's first batch bound exactly one epoch of reads.
        before = ray.get(counters.totals.remote())
        started = time.monotonic()
        # Ray Data hands each worker a share of the epoch's blocks, so the step count is known only
        # at the end: steps and their rate, no ETA (the epoch line has one).
        steps = Progress(
            f"Epoch {epoch + 1}/{config['epochs']}",
            None,
            unit="steps",
            emit=_print_line if rank == 0 else _quiet,
        )
        losses = run_steps(
            iter_training_batches(shard, channels=channels, batch_size=config["batch_size"], seed=None),
            lambda x, y: train_step(model, optimizer, x, y, device),
            steps,
        )
        elapsed = time.monotonic() - started
        samples = torch.tensor([len(losses) * config["batch_size"]], dtype=torch.float64, device=device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(samples)
        reads = epoch_input(before, ray.get(counters.totals.remote()))
        total = int(samples.item())
        entry = {
            "epoch": epoch,
            "loss": float(np.mean(losses)) if losses else None,
            "samples": total,
            "samples_per_s": round(total / elapsed, 1) if elapsed > 0 else None,
            **reads,
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
    from ray.train.torch import TorchConfig, TorchTrainer

    if not ray.is_initialized():
        ray.init(log_to_driver=True)
    use_cuda = _use_gpu(args)
    resources: dict[str, float] = {"CPU": args.cpus_per_worker}
    if use_cuda:
        resources["GPU"] = max(1.0, args.gpus_per_worker)
    elif args.gpus_per_worker > 0:
        # Logical GPUs of a CPU-only cluster: the reservation gates admission and placement.
        resources["GPU"] = args.gpus_per_worker
    from nuro_ml.training_data.ray_data import ShardReadCounters, shard_dataset, window_bytes

    # Read tasks on every node report their cache counters here; the workers diff them per epoch.
    counters = ShardReadCounters.remote()  # type: ignore[attr-defined]
    train_shards = shard_dataset(
        manifest["splits"]["train"]["shards"],
        source_config(args),
        window_bytes=window_bytes(manifest),
        counters=counters,
    )
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "manifest": manifest,
            "counters": counters,
            "use_cuda": use_cuda,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
            "seed": args.seed,
        },
        datasets={"train": train_shards},
        # Ray Train picks NCCL whenever workers hold GPUs, logical ones included; NCCL needs CUDA.
        torch_config=TorchConfig(backend="nccl" if use_cuda else "gloo"),
        # Ray only accepts a GPU reservation with use_gpu set, even for logical GPUs.
        scaling_config=ray.train.ScalingConfig(
            num_workers=args.num_workers, use_gpu="GPU" in resources, resources_per_worker=resources
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
    from brake_model import BrakeEventNet, fit_logistic, predict
    from nuro_ml.training_data.scoring import binary_metrics

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
    sources = source_config(args)
    manifest = load_manifest(args.manifest, None if args.local_shards else sources.s3_client())
    checkpoint, last = fit(args, manifest, run_name=run_name, storage_path=storage_path)
    # The driver scores the held-out drives through the same cache (the train split is a hit).
    source = sources.build()
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
