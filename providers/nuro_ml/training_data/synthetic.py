"""ETL-layout ``ego_motion`` partitions for drives simulated with the fleet generator's kinematics.

The ETL derives ``ego_motion`` from the decoded pose, CAN, IMU and GNSS topics with
:func:`nuro_ml.etl.transforms.ego_motion`; this module feeds that same transform with the signals
:func:`nuro_ml.etl.kinematics.simulate` produces (at the topics' recorded rates, with the
generator's sensor noise), skipping only MCAP encoding and Spark. Benchmarks and tests use it to
get many drives of training data in seconds.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from datetime import UTC, date, datetime, time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from nuro_ml.etl import kinematics
from nuro_ml.etl.transforms import SRC_CAN, SRC_GNSS, SRC_IMU, SRC_POSE, TransformConfig, ego_motion

#: Sample every n-th simulator tick (200 Hz): pose and CAN at 100 Hz, IMU at 200 Hz, GNSS at 10 Hz.
_DECIMATION = {SRC_POSE: 2, SRC_CAN: 2, SRC_IMU: 1, SRC_GNSS: 20}


def simulated_ego_motion(
    vehicle: str, day: date, drive_index: int, drive_seconds: float, seed: int
) -> pa.Table:
    """The ``ego_motion`` rows of one simulated drive."""
    rng = np.random.default_rng([seed, day.toordinal(), zlib.crc32(vehicle.encode()), drive_index])
    traj = kinematics.simulate(drive_seconds, rng)
    start = datetime.combine(day, time(7), tzinfo=UTC).timestamp() + drive_index * (drive_seconds + 600)
    t_ns = (np.int64(int(start)) * 1_000_000_000 + (traj.t * 1e9).astype(np.int64)).astype(np.int64)
    noise = rng.normal(size=(traj.t.shape[0], 4))
    signals: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {
        SRC_POSE: (traj.x, traj.y, traj.yaw),
        SRC_CAN: (
            np.maximum(0.0, traj.speed + 0.02 * noise[:, 0]),
            kinematics.brake_pressure_bar(traj.accel),
            kinematics.steering_angle_rad(traj.curvature),
        ),
        SRC_IMU: (traj.yaw_rate + 0.002 * noise[:, 1], traj.accel + 0.05 * noise[:, 2], traj.lateral_accel),
        SRC_GNSS: (
            np.ones_like(traj.t),
            np.asarray(rng.uniform(0.4, 1.6, traj.t.shape[0])),
            np.zeros_like(traj.t),
        ),
    }
    parts = []
    for src, (a, b, c) in signals.items():
        sl = slice(None, None, _DECIMATION[src])
        n = t_ns[sl].shape[0]
        parts.append(
            pa.table(
                {
                    "src": pa.array(np.full(n, src, np.int32)),
                    "t_ns": pa.array(t_ns[sl]),
                    "a": pa.array(a[sl], pa.float64()),
                    "b": pa.array(b[sl], pa.float64()),
                    "c": pa.array(c[sl], pa.float64()),
                }
            )
        )
    drive_id = f"drv-{day:%Y%m%d}-{drive_index:02d}"
    return ego_motion(pa.concat_tables(parts), vehicle, drive_id, TransformConfig())


def write_ego_motion(
    etl_root: str | Path,
    days: Sequence[date],
    vehicles: Sequence[str],
    *,
    drives_per_day: int,
    drive_seconds: float,
    seed: int = 20261124,
) -> list[Path]:
    """Write ``<etl_root>/ego_motion/date=D/vehicle=V/part-00000.parquet`` as the ETL publishes it."""
    written = []
    for day in days:
        for vehicle in vehicles:
            tables = [
                simulated_ego_motion(vehicle, day, k, drive_seconds, seed) for k in range(drives_per_day)
            ]
            out = Path(etl_root) / "ego_motion" / f"date={day.isoformat()}" / f"vehicle={vehicle}"
            out.mkdir(parents=True, exist_ok=True)
            path = out / "part-00000.parquet"
            pq.write_table(pa.concat_tables(tables), path)
            written.append(path)
    return written
