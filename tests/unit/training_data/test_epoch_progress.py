"""The torch workload's epoch loop reports steps done of the epoch, their rate, ETA and the loss."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from nuro_ml.progress import Progress
from nuro_ml.training_data.loader import LocalSource, ShardLoader
from nuro_ml.training_data.spec import DatasetSpec
from nuro_ml.training_data.windows import build_windows

from tests.unit.training_data.test_spec_windows import _ego

WORKLOADS = Path(__file__).resolve().parents[3] / "workloads"


def test_steps_of_an_epoch_are_counted_against_the_loaders_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(WORKLOADS))
    from train_torch import run_steps

    spec = DatasetSpec(start=date(2026, 1, 1), end=date(2026, 1, 1), window_ticks=2, stride_ticks=1)
    windows = build_windows(_ego("drv", 40, brake_at=20), spec)
    pq.write_table(windows, tmp_path / "shard.parquet")
    shards = [{"uri": "s3://b/shard.parquet", "rows": windows.num_rows}]
    loader = ShardLoader(shards, LocalSource(tmp_path), channels=8, batch_size=8, seed=1)
    total = loader.batches_per_epoch(0)
    lines: list[str] = []
    steps = Progress("Epoch 1/3", total, unit="steps", every_s=0.0, emit=lines.append)

    losses = run_steps(loader.epoch(0), lambda x, y: float(np.mean((y - 0.5) ** 2)), steps)

    assert len(losses) == total == windows.num_rows // 8
    for n, line in enumerate(lines[:-1], start=1):
        eta = ", ETA [\\d.hms]+" if n < total else ""
        assert re.fullmatch(
            rf"Epoch 1/3: {n}/{total} steps \(\d+%\), [\d.,]+ steps/\w+{eta}, loss {losses[n - 1]:.4f}", line
        ), line
    assert re.fullmatch(
        rf"Epoch 1/3: {total}/{total} steps \(100%\) in [\d.hms]+, [\d.,]+ steps/\w+, loss {losses[-1]:.4f}",
        lines[-1],
    )
