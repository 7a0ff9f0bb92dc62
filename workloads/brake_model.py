"""Hard-brake event detector over ego-motion windows, in plain PyTorch.

The model reads a window of the 10 Hz ``ego_motion`` grid (odometry speed, acceleration, jerk and
yaw rate, CAN speed and steering, IMU yaw rate and longitudinal acceleration) and scores whether
the vehicle braked hard (brake line pressure over the threshold) inside it. The brake pressure
itself is never an input: the detector is for drives whose brake channel is missing or suspect,
and for triaging hours of logs without decoding CAN.

Two temporal convolution layers see a few ticks at a time; max and mean pooling over time turn
"a short, sharp deceleration anywhere in the window" into a feature, which a linear model over
the flattened window cannot express. That linear model, a logistic regression on the same
normalised inputs, is the baseline every run reports next to the network. Both are scored with
:func:`nuro_ml.training_data.scoring.binary_metrics`, as the boosted-tree workload is.

Imports torch and numpy only, so it runs on a GPU box without Ray or Airflow.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn


class BrakeEventNet(nn.Module):
    """Temporal CNN: ``[B, ticks, channels]`` -> one logit per window."""

    def __init__(self, channels: int, mean: list[float], std: list[float], hidden: int = 32) -> None:
        super().__init__()
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
        self.conv = nn.Sequential(
            nn.Conv1d(channels, hidden, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.Conv1d(hidden, hidden, kernel_size=5, padding=2),
            nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = ((x - self.mean) / self.std).transpose(1, 2)
        h = self.conv(z)
        pooled = torch.cat([h.amax(dim=2), h.mean(dim=2)], dim=1)
        out: torch.Tensor = self.head(pooled).squeeze(1)
        return out


class LogisticBaseline(nn.Module):
    """Logistic regression over the flattened, normalised window (the named baseline)."""

    def __init__(self, ticks: int, channels: int, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
        self.linear = nn.Linear(ticks * channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.linear(((x - self.mean) / self.std).flatten(1)).squeeze(1)
        return out


def pick_device(prefer_cuda: bool = True) -> torch.device:
    return torch.device("cuda") if prefer_cuda and torch.cuda.is_available() else torch.device("cpu")


def train_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, x: np.ndarray, y: np.ndarray, device: torch.device
) -> float:
    """One optimiser step on a batch; returns the batch loss."""
    model.train()
    xb = torch.from_numpy(x).to(device, non_blocking=True)
    yb = torch.from_numpy(y).to(device, non_blocking=True)
    optimizer.zero_grad(set_to_none=True)
    loss = nn.functional.binary_cross_entropy_with_logits(model(xb), yb)
    loss.backward()  # type: ignore[no-untyped-call]
    optimizer.step()
    return float(loss.detach())


@torch.no_grad()
def predict(
    model: nn.Module, batches: Iterable[tuple[np.ndarray, np.ndarray]], device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities) over every batch."""
    model.eval()
    labels, scores = [], []
    for x, y in batches:
        logits = model(torch.as_tensor(np.array(x, copy=True)).to(device))
        scores.append(torch.sigmoid(logits).float().cpu().numpy())
        labels.append(y)
    if not labels:
        return np.empty(0, np.float32), np.empty(0, np.float32)
    return np.concatenate(labels), np.concatenate(scores)


def fit_logistic(
    x: np.ndarray, y: np.ndarray, mean: list[float], std: list[float], l2: float = 1e-3
) -> LogisticBaseline:
    """Full-batch L-BFGS fit of the baseline (L2-regularised, as scikit-learn's default is)."""
    model = LogisticBaseline(x.shape[1], x.shape[2], mean, std)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    optimizer = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(model(xt), yt)
        loss = loss + l2 * model.linear.weight.pow(2).sum()
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    optimizer.step(closure)  # type: ignore[no-untyped-call]
    return model
