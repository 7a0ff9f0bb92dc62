"""The plain-PyTorch model and training step (no Ray)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.torch_support import require_torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "workloads"))


@pytest.fixture(autouse=True)
def _torch() -> None:
    require_torch()


def test_network_learns_what_the_linear_baseline_cannot() -> None:
    """Label: a short dip below a threshold anywhere in the window (a hard brake), as in the data."""
    import torch
    from brake_model import BrakeEventNet, fit_logistic, predict, train_step
    from nuro_ml.training_data.scoring import binary_metrics

    rng = np.random.default_rng(0)
    n, ticks, channels = 800, 20, 2
    x = rng.normal(0.0, 1.0, size=(n, ticks, channels)).astype(np.float32)
    y = np.zeros(n, np.float32)
    hit = rng.random(n) < 0.3
    where = rng.integers(0, ticks - 3, n)
    for i in np.flatnonzero(hit):
        x[i, where[i] : where[i] + 3, 0] -= 4.0
        y[i] = 1.0
    mean, std = [0.0] * channels, [1.0] * channels
    train, test = slice(0, 600), slice(600, None)
    torch.manual_seed(0)
    model = BrakeEventNet(channels, mean, std)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    cpu = torch.device("cpu")
    losses = []
    for _ in range(8):
        perm = rng.permutation(600)
        for lo in range(0, 600, 64):
            idx = perm[lo : lo + 64]
            losses.append(train_step(model, optimizer, x[train][idx], y[train][idx], cpu))
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    ours = binary_metrics(*predict(model, [(x[test], y[test])], cpu))
    baseline = binary_metrics(
        *predict(fit_logistic(x[train], y[train], mean, std), [(x[test], y[test])], cpu)
    )
    assert ours["average_precision"] > baseline["average_precision"]
    assert ours["auc"] > 0.95
