"""Train the hard-brake classifier with distributed XGBoost on Ray Train.

Submitted through the Ray Jobs API (``RayJobOperator``) with this directory as the job's
``working_dir``; it also runs by hand against any Ray cluster (``RAY_ADDRESS``)::

    python train_xgboost.py --start 2024-01-01 --end 2024-01-08 --output-dir /data/artifacts/run1
    python train_xgboost.py --training-data scenes.parquet --output-dir /tmp/run1

Features come point-in-time correct from Feast through
``nuro_ml.features.training.load_training_frame`` (or from a Parquet file with the same
columns). The driver splits off a stratified hold-out set, ships both splits to the Ray object
store, and ``--num-workers`` Ray Train workers (each reserving ``--gpus-per-worker`` logical
GPUs; XGBoost itself runs on CPU) train one model together over XGBoost's collective
(rabit), checkpointing to ``--storage-path``. A run resubmitted under the same ``--run-name``
resumes from its latest checkpoint. The driver then scores the hold-out set and writes
``model.ubj`` and ``metrics.json`` to ``--output-dir``, replacing earlier files only once the
new ones are complete, and prints the final ``NURO_ML_RESULT <json>`` line that the operator
returns through XCom.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from nuro_ml.training_data.scoring import binary_metrics

if TYPE_CHECKING:
    import xgboost

log = logging.getLogger("nuro_ml.workloads.train_xgboost")

RESULT_MARKER = "NURO_ML_RESULT"
LABEL = "hard_brake"
MODEL_FILENAME = "model.ubj"
METRICS_FILENAME = "metrics.json"
#: Identifiers, timestamps and the label itself, plus ``brake_pressure_max``: the label is
#: derived from that same CAN signal, so training on it would leak the answer.
NON_FEATURE_COLUMNS = frozenset(
    {
        "scene_id",
        "vehicle_id",
        "drive_id",
        "event_timestamp",
        "scene_end",
        "created_timestamp",
        LABEL,
        "brake_pressure_max",
    }
)
#: Ray Train's XGBoost callback stores the booster under this name in each checkpoint.
CHECKPOINT_MODEL_FILENAME = "model.ubj"


class TrainingDataError(ValueError):
    """The training frame cannot be used as it is; the message names the source and the column."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    source = parser.add_argument_group("training data (Feast by default, or a Parquet file)")
    source.add_argument("--start", type=_parse_time, help="first scene start included (ISO time, UTC)")
    source.add_argument("--end", type=_parse_time, help="scene starts before this instant (ISO time, UTC)")
    source.add_argument("--vehicles", default="", help="comma-separated vehicle ids (default: all)")
    source.add_argument("--feature-repo", default=None, help="Feast repository (default: nuro_ml settings)")
    source.add_argument("--feature-service", default="scene_training")
    source.add_argument(
        "--training-data",
        default=None,
        help="Parquet file or directory with the columns load_training_frame returns",
    )
    parser.add_argument(
        "--output-dir",
        default=None,
        help="where model.ubj and metrics.json go (default: <artifacts dir>/<run name>)",
    )
    parser.add_argument(
        "--storage-path",
        default=None,
        help="Ray Train storage for checkpoints (default: <output dir>/checkpoints)",
    )
    parser.add_argument(
        "--run-name", default=None, help="Ray Train run name; same name resumes (default: $NURO_ML_RUN_KEY)"
    )
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument(
        "--gpus-per-worker",
        type=float,
        default=1.0,
        help="logical GPUs each worker reserves (0 for CPU-only clusters)",
    )
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument("--num-boost-round", type=int, default=20)
    parser.add_argument("--max-depth", type=int, default=4)
    parser.add_argument("--learning-rate", "--eta", dest="learning_rate", type=float, default=0.3)
    parser.add_argument("--test-fraction", type=float, default=0.25)
    parser.add_argument("--checkpoint-every", type=int, default=5, help="boosting rounds between checkpoints")
    parser.add_argument("--max-failures", type=int, default=1, help="worker-group restarts Ray Train may do")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    if args.training_data is None and (args.start is None or args.end is None):
        parser.error("either --training-data or both --start and --end are required")
    if args.num_workers < 1:
        parser.error("--num-workers must be at least 1")
    if not 0.0 < args.test_fraction < 1.0:
        parser.error("--test-fraction must be between 0 and 1")
    if args.num_boost_round < 1:
        parser.error("--num-boost-round must be at least 1")
    return args


def _parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def load_frame(args: argparse.Namespace) -> tuple[pd.DataFrame, str]:
    """Return the training frame and a description of where it came from (for messages)."""
    if args.training_data:
        path = Path(args.training_data)
        if not path.exists():
            raise TrainingDataError(f"--training-data {path}: no such file or directory")
        return pd.read_parquet(path), str(path)
    from nuro_ml.features.training import load_training_frame

    vehicles = [v for v in args.vehicles.split(",") if v] or None
    frame = load_training_frame(
        start=args.start,
        end=args.end,
        vehicles=vehicles,
        repo_path=args.feature_repo,
        feature_service=args.feature_service,
    )
    window = f"[{args.start.isoformat()}, {args.end.isoformat()})"
    return frame, f"feature service {args.feature_service!r} {window}"


def feature_columns(frame: pd.DataFrame) -> list[str]:
    return [
        c
        for c in frame.columns
        if c not in NON_FEATURE_COLUMNS
        and (pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c]))
    ]


def validate_frame(frame: pd.DataFrame, source: str, *, min_rows: int) -> list[str]:
    """Check the label and features; return the feature columns in frame order."""
    if LABEL not in frame.columns:
        raise TrainingDataError(
            f"{source}: label column {LABEL!r} missing (columns: {', '.join(map(str, frame.columns))})"
        )
    labels = frame[LABEL]
    if labels.isna().any():
        raise TrainingDataError(f"{source}: column {LABEL!r} has {int(labels.isna().sum())} null value(s)")
    bad = sorted(set(labels.unique().tolist()) - {0, 1})
    if bad:
        raise TrainingDataError(f"{source}: column {LABEL!r} must be 0/1, found {bad[:5]}")
    features = feature_columns(frame)
    if not features:
        raise TrainingDataError(f"{source}: no numeric feature columns besides {sorted(NON_FEATURE_COLUMNS)}")
    if len(frame) < min_rows:
        raise TrainingDataError(f"{source}: {len(frame)} row(s), need at least {min_rows} to train and test")
    return features


def split_holdout(
    frame: pd.DataFrame, *, test_fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stratified random split, reproducible for a given frame and seed.

    Rows are ordered by ``scene_id`` first (when present) so that the split does not depend on the
    order the feature store returned them in.
    """
    if "scene_id" in frame.columns:
        frame = frame.sort_values("scene_id", kind="stable")
    frame = frame.reset_index(drop=True)
    rng = np.random.default_rng(seed)
    test_index: list[int] = []
    for _, group in frame.groupby(LABEL, sort=True):
        n_test = math.ceil(len(group) * test_fraction) if len(group) > 1 else 0
        test_index.extend(rng.permutation(group.index.to_numpy())[:n_test].tolist())
    is_test = frame.index.isin(test_index)
    return frame[~is_test].reset_index(drop=True), frame[is_test].reset_index(drop=True)


def round_progress(total: int, done: int = 0, every_s: float = 10.0) -> xgboost.callback.TrainingCallback:
    """An XGBoost callback printing boosting progress: rounds done/total, rounds/s, ETA, latest metrics.

    :param total: the rounds the model will have at the end (restored rounds included).
    :param done: rounds restored from a checkpoint before this training started.
    :param every_s: least seconds between two lines (the last round always prints).
    """
    import xgboost as xgb
    from nuro_ml.progress import Progress

    class RoundProgress(xgb.callback.TrainingCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            # print, not logging: a Ray worker's stdout is what reaches the job log.
            self.progress = Progress(
                "Boosting rounds", total, unit="rounds", done=done, every_s=every_s, emit=_print_line
            )

        def after_iteration(self, model: xgb.Booster, epoch: int, evals_log: dict[str, Any]) -> bool:
            latest = {
                f"{data}-{metric}": f"{values[-1]:.4f}"
                for data, metrics in evals_log.items()
                for metric, values in metrics.items()
                if values
            }
            self.progress.update(model.num_boosted_rounds(), details=latest)
            return False

        def after_training(self, model: xgb.Booster) -> xgb.Booster:
            self.progress.finish()
            return model

    return RoundProgress()


def _print_line(line: str) -> None:
    print(line, flush=True)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Runs in every Ray Train worker: train on this worker's shard, all workers in one collective."""
    import ray
    import ray.train
    import xgboost as xgb
    from ray.train.xgboost import RayTrainReportCallback

    class ReportAtCheckpoints(RayTrainReportCallback):  # type: ignore[misc]
        """Report metrics only together with checkpoints: every report is a barrier across workers."""

        def _report_metrics(self, report_dict: dict[str, float]) -> None:
            return None

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    features: list[str] = config["features"]
    train = ray.get(config["train"]).iloc[rank::world]
    valid = ray.get(config["valid"]).iloc[rank::world]
    dtrain = xgb.DMatrix(train[features].astype("float64"), label=train[LABEL].to_numpy())
    dvalid = xgb.DMatrix(valid[features].astype("float64"), label=valid[LABEL].to_numpy())

    booster: xgb.Booster | None = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        booster = RayTrainReportCallback.get_model(checkpoint, filename=CHECKPOINT_MODEL_FILENAME)
    done = booster.num_boosted_rounds() if booster is not None else 0
    remaining = config["num_boost_round"] - done
    if checkpoint is not None:
        print(f"worker {rank}/{world}: resuming after {done} boosting round(s) from {checkpoint.path}")
    if remaining <= 0:
        # Everything was trained before a restart: report the restored model so the run has a result.
        ray.train.report({"boosting_rounds": done}, checkpoint=checkpoint)
        return
    xgb.train(
        config["params"],
        dtrain,
        num_boost_round=remaining,
        evals=[(dtrain, "train"), (dvalid, "valid")],
        xgb_model=booster,
        verbose_eval=False,
        callbacks=[
            # One worker speaks for the group: every worker runs the same rounds in lockstep.
            *([round_progress(config["num_boost_round"], done)] if rank == 0 else []),
            ReportAtCheckpoints(
                metrics={
                    "train_logloss": "train-logloss",
                    "valid_logloss": "valid-logloss",
                    "valid_auc": "valid-auc",
                },
                filename=CHECKPOINT_MODEL_FILENAME,
                frequency=config["checkpoint_every"],
                checkpoint_at_end=True,
            ),
        ],
    )


def fit(
    train: pd.DataFrame,
    test: pd.DataFrame,
    features: list[str],
    args: argparse.Namespace,
    *,
    run_name: str,
    storage_path: Path,
) -> tuple[xgboost.Booster, str | None]:
    """Run the distributed training and return the final booster and its checkpoint path."""
    import ray
    import ray.train
    from ray.train.xgboost import RayTrainReportCallback, XGBoostTrainer

    if not ray.is_initialized():
        ray.init(log_to_driver=True)
    params = {
        "objective": "binary:logistic",
        "eval_metric": ["logloss", "auc"],
        "tree_method": "hist",
        "device": "cpu",
        "max_depth": args.max_depth,
        "eta": args.learning_rate,
        "nthread": max(1, int(args.cpus_per_worker)),
        "seed": args.seed,
    }
    resources: dict[str, float] = {"CPU": args.cpus_per_worker}
    if args.gpus_per_worker > 0:
        # Logical GPUs: the reservation gates admission and placement, XGBoost still runs on CPU.
        resources["GPU"] = args.gpus_per_worker
    trainer = XGBoostTrainer(
        train_loop_per_worker,
        train_loop_config={
            "train": ray.put(train),
            "valid": ray.put(test),
            "features": features,
            "params": params,
            "num_boost_round": args.num_boost_round,
            "checkpoint_every": args.checkpoint_every,
        },
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
    if result.error is not None:
        raise result.error
    if result.checkpoint is None:
        raise RuntimeError(f"Ray Train run {run_name!r} finished without a checkpoint under {storage_path}")
    booster = RayTrainReportCallback.get_model(result.checkpoint, filename=CHECKPOINT_MODEL_FILENAME)
    return booster, result.checkpoint.path


def _write_atomically(files: dict[Path, bytes]) -> None:
    """Write every file next to its target first, then swap them in: no half-written outputs."""
    staged: list[tuple[Path, Path]] = []
    try:
        for target, payload in files.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
            staged.append((Path(tmp_name), target))
        for tmp, target in staged:
            os.replace(tmp, target)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)


def _default_artifacts_root() -> Path:
    from nuro_ml import settings

    return settings.artifacts_dir()


def training_run_name(explicit: str | None, model: str) -> str:
    """The run's name: the one given, else the task instance's key (the same on every try, so a
    retry resumes from the last checkpoint), else a timestamp."""
    return (
        explicit
        or os.environ.get("NURO_ML_RUN_KEY")
        or (f"train-{model}-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S"))
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    run_name = training_run_name(args.run_name, "xgboost")
    output_dir = Path(args.output_dir) if args.output_dir else _default_artifacts_root() / run_name
    output_dir = output_dir.resolve()
    storage_path = Path(args.storage_path).resolve() if args.storage_path else output_dir / "checkpoints"

    frame, source = load_frame(args)
    min_rows = 2 * args.num_workers + 2
    features = validate_frame(frame, source, min_rows=min_rows)
    train, test = split_holdout(frame, test_fraction=args.test_fraction, seed=args.seed)
    if len(train) < args.num_workers:
        raise TrainingDataError(f"{source}: {len(train)} training row(s) for {args.num_workers} workers")
    log.info(
        "Training on %d rows (%d train, %d test, %d positive) from %s with %d features, %d workers",
        len(frame),
        len(train),
        len(test),
        int(frame[LABEL].sum()),
        source,
        len(features),
        args.num_workers,
    )

    booster, checkpoint_path = fit(train, test, features, args, run_name=run_name, storage_path=storage_path)

    import xgboost as xgb

    scores = booster.predict(xgb.DMatrix(test[features].astype("float64")))
    metrics: dict[str, Any] = binary_metrics(test[LABEL].to_numpy(), scores)
    metrics.update(
        rows_used=len(frame),
        train_rows=len(train),
        test_rows=len(test),
        positive_rate=float(frame[LABEL].mean()),
        boosting_rounds=int(booster.num_boosted_rounds()),
    )
    model_path = output_dir / MODEL_FILENAME
    metrics_path = output_dir / METRICS_FILENAME
    metrics_doc = {
        "metrics": metrics,
        "features": features,
        "label": LABEL,
        "run_name": run_name,
        "source": source,
        "num_workers": args.num_workers,
    }
    _write_atomically(
        {
            model_path: bytes(booster.save_raw(raw_format="ubj")),
            metrics_path: (
                json.dumps(metrics_doc, indent=2, sort_keys=True, allow_nan=False) + "\n"
            ).encode(),
        }
    )
    return {
        "metrics": metrics,
        "artifact_uri": model_path.as_uri(),
        "metrics_uri": metrics_path.as_uri(),
        "output_dir": str(output_dir),
        "checkpoint_path": checkpoint_path,
        "run_name": run_name,
        "features": features,
        # What the job read, for lineage: a Feast feature service or a Parquet file.
        "feature_service": None if args.training_data else args.feature_service,
        "training_data": str(Path(args.training_data).resolve()) if args.training_data else None,
        "num_workers": args.num_workers,
        "gpus_per_worker": args.gpus_per_worker,
        "duration_s": round(time.monotonic() - started, 3),
    }


def result_line(result: dict[str, Any]) -> str:
    """The one line the operator parses from the job logs (strict JSON, single line)."""
    return f"{RESULT_MARKER} {json.dumps(result, sort_keys=True, allow_nan=False, separators=(',', ':'))}"


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    try:
        result = run(args)
    except TrainingDataError as exc:
        print(f"train_xgboost: {exc}", file=sys.stderr, flush=True)
        return 2
    print(result_line(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
