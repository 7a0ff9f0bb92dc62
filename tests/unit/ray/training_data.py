"""A small synthetic training frame with the columns ``load_training_frame`` returns.

The label depends on deceleration and jerk (plus noise), so a classifier can learn it and
metrics land well above chance without being perfect.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

FEATURES = [
    "speed_mean_mps",
    "speed_max_mps",
    "accel_p95_mps2",
    "jerk_abs_mean_mps3",
    "yaw_rate_abs_mean_rps",
    "gnss_fix_ratio",
    "gnss_h_accuracy_m",
    "lidar_points_mean",
]


def make_training_frame(rows: int = 400, *, seed: int = 3, vehicles: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    vehicle = np.array([f"veh{v:02d}" for v in rng.integers(0, vehicles, rows)])
    accel = rng.gamma(2.0, 1.0, rows)
    jerk = rng.gamma(1.5, 0.8, rows)
    speed = rng.uniform(2.0, 30.0, rows)
    logit = 1.6 * (accel - 2.0) + 1.2 * (jerk - 1.2) + rng.normal(0.0, 1.0, rows)
    frame = pd.DataFrame(
        {
            "scene_id": [f"{v}_drive{i // 50:03d}_{i % 50:04d}" for i, v in enumerate(vehicle)],
            "vehicle_id": vehicle,
            "event_timestamp": pd.to_datetime(
                [start + timedelta(seconds=10 * i) for i in range(rows)], utc=True
            ),
            "speed_mean_mps": speed,
            "speed_max_mps": speed + rng.uniform(0.0, 5.0, rows),
            "accel_p95_mps2": accel,
            "jerk_abs_mean_mps3": jerk,
            "yaw_rate_abs_mean_rps": rng.uniform(0.0, 0.4, rows),
            "gnss_fix_ratio": rng.uniform(0.8, 1.0, rows),
            "gnss_h_accuracy_m": rng.uniform(0.3, 3.0, rows),
            "lidar_points_mean": rng.normal(30000.0, 2000.0, rows),
            "hard_brake": (logit > 0).astype("int64"),
        }
    )
    return frame


def write_training_parquet(path: Path, rows: int = 400, *, seed: int = 3) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    make_training_frame(rows, seed=seed).to_parquet(path, index=False)
    return path
