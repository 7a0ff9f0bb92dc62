"""Per-drive transforms to ML-ready tables (pure numpy / Arrow, run inside Spark grouped maps).

* :func:`ego_motion`: topics aligned onto a common clock grid (default 10 Hz) starting at the
  drive's first pose, with speed, acceleration, jerk and yaw rate derived from the ego pose and
  CAN / IMU / GNSS signals interpolated (continuous) or held (GNSS status) onto the grid.
* :func:`scene_stats`: fixed windows (default 10 s) from the same grid, aggregated per scene;
  columns exactly as the shared contract lists them.
* :func:`lidar_stats`: per-cloud statistics computed from the packed point data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nuro_ml.etl.arrays import one_array

#: Source codes of the narrow union the job feeds to the grouped transforms.
SRC_POSE, SRC_CAN, SRC_IMU, SRC_GNSS, SRC_LIDAR, SRC_CAMERA = range(6)

TS = pa.timestamp("us", tz="UTC")

SCENE_STATS_SCHEMA = pa.schema(
    [
        ("scene_id", pa.string()),
        ("vehicle_id", pa.string()),
        ("drive_id", pa.string()),
        ("event_timestamp", TS),
        ("scene_end", TS),
        ("created_timestamp", TS),
        ("speed_mean_mps", pa.float64()),
        ("speed_max_mps", pa.float64()),
        ("accel_p95_mps2", pa.float64()),
        ("jerk_abs_mean_mps3", pa.float64()),
        ("yaw_rate_abs_mean_rps", pa.float64()),
        ("gnss_fix_ratio", pa.float64()),
        ("gnss_h_accuracy_m", pa.float64()),
        ("lidar_points_mean", pa.float64()),
        ("camera_frames", pa.int64()),
        ("brake_pressure_max", pa.float64()),
        ("hard_brake", pa.int64()),
    ]
)

EGO_MOTION_SCHEMA = pa.schema(
    [
        ("vehicle_id", pa.string()),
        ("drive_id", pa.string()),
        ("scene_id", pa.string()),
        ("scene_index", pa.int32()),
        ("t", TS),
        ("t_ns", pa.int64()),
        ("x_m", pa.float64()),
        ("y_m", pa.float64()),
        ("yaw_rad", pa.float64()),
        ("speed_mps", pa.float64()),
        ("accel_mps2", pa.float64()),
        ("jerk_mps3", pa.float64()),
        ("yaw_rate_rps", pa.float64()),
        ("can_speed_mps", pa.float64()),
        ("brake_pressure_bar", pa.float64()),
        ("steering_angle_rad", pa.float64()),
        ("imu_yaw_rate_rps", pa.float64()),
        ("imu_accel_x_mps2", pa.float64()),
        ("gnss_fix_valid", pa.bool_()),
        ("gnss_h_std_m", pa.float64()),
    ]
)


@dataclass(frozen=True)
class TransformConfig:
    grid_hz: float = 10.0
    scene_seconds: float = 10.0
    hard_brake_bar: float = 45.0
    #: A trailing partial scene is kept when the grid covers at least this share of it.
    min_scene_coverage: float = 0.5


def scene_id(vehicle_id: str, drive_id: str, index: int) -> str:
    return f"{vehicle_id}_{drive_id}_{index:04d}"


@dataclass
class _Signals:
    t: np.ndarray
    a: np.ndarray
    b: np.ndarray
    c: np.ndarray


def _split(table: pa.Table) -> dict[int, _Signals]:
    src = table.column("src").to_numpy()
    t = table.column("t_ns").to_numpy()
    a = table.column("a").to_numpy(zero_copy_only=False)
    b = table.column("b").to_numpy(zero_copy_only=False)
    c = table.column("c").to_numpy(zero_copy_only=False)
    out = {}
    for code in range(6):
        m = src == code
        order = np.argsort(t[m], kind="stable")
        out[code] = _Signals(t[m][order], a[m][order], b[m][order], c[m][order])
    return out


def _interp(grid: np.ndarray, t: np.ndarray, v: np.ndarray) -> np.ndarray:
    if t.shape[0] == 0:
        return np.full(grid.shape[0], np.nan)
    return np.interp(grid.astype(np.float64), t.astype(np.float64), v.astype(np.float64))


@dataclass
class _Grid:
    t: np.ndarray
    scene: np.ndarray
    x: np.ndarray
    y: np.ndarray
    yaw: np.ndarray
    speed: np.ndarray
    accel: np.ndarray
    jerk: np.ndarray
    yaw_rate: np.ndarray


def _grid(pose: _Signals, cfg: TransformConfig) -> _Grid | None:
    if pose.t.shape[0] < 2:
        return None
    step = round(1e9 / cfg.grid_hz)
    t0 = int(pose.t[0])
    grid = np.arange(t0, int(pose.t[-1]) + 1, step, dtype=np.int64)
    if grid.shape[0] < 3:
        return None
    dt = step / 1e9
    x = _interp(grid, pose.t, pose.a)
    y = _interp(grid, pose.t, pose.b)
    yaw = _interp(grid, pose.t, np.unwrap(pose.c))
    vx, vy = np.gradient(x, dt), np.gradient(y, dt)
    speed = np.hypot(vx, vy)
    accel = np.gradient(speed, dt)
    jerk = np.gradient(accel, dt)
    yaw_rate = np.gradient(yaw, dt)
    scene = ((grid - t0) // round(cfg.scene_seconds * 1e9)).astype(np.int32)
    wrapped = (yaw + np.pi) % (2 * np.pi) - np.pi
    return _Grid(grid, scene, x, y, wrapped, speed, accel, jerk, yaw_rate)


def ego_motion(table: pa.Table, vehicle_id: str, drive_id: str, cfg: TransformConfig) -> pa.Table:
    """The drive's signals on the common clock grid (one row per grid tick)."""
    sig = _split(table)
    g = _grid(sig[SRC_POSE], cfg)
    if g is None:
        return EGO_MOTION_SCHEMA.empty_table()
    can, imu, gnss = sig[SRC_CAN], sig[SRC_IMU], sig[SRC_GNSS]
    if gnss.t.shape[0]:
        idx = np.clip(np.searchsorted(gnss.t, g.t, side="right") - 1, 0, None)
        have = np.searchsorted(gnss.t, g.t, side="right") > 0
        valid = np.where(have, gnss.a[idx] > 0.5, False)
        h_std = np.where(have, gnss.b[idx], np.nan)
    else:
        valid = np.zeros(g.t.shape[0], dtype=bool)
        h_std = np.full(g.t.shape[0], np.nan)
    n = g.t.shape[0]
    return pa.table(
        {
            "vehicle_id": pa.array([vehicle_id] * n, pa.string()),
            "drive_id": pa.array([drive_id] * n, pa.string()),
            "scene_id": pa.array([scene_id(vehicle_id, drive_id, int(k)) for k in g.scene], pa.string()),
            "scene_index": pa.array(g.scene),
            "t": pa.array(g.t // 1000).cast(TS),
            "t_ns": pa.array(g.t),
            "x_m": g.x,
            "y_m": g.y,
            "yaw_rad": g.yaw,
            "speed_mps": g.speed,
            "accel_mps2": g.accel,
            "jerk_mps3": g.jerk,
            "yaw_rate_rps": g.yaw_rate,
            "can_speed_mps": _interp(g.t, can.t, can.a),
            "brake_pressure_bar": _interp(g.t, can.t, can.b),
            "steering_angle_rad": _interp(g.t, can.t, can.c),
            "imu_yaw_rate_rps": _interp(g.t, imu.t, imu.a),
            "imu_accel_x_mps2": _interp(g.t, imu.t, imu.b),
            "gnss_fix_valid": pa.array(valid),
            "gnss_h_std_m": h_std,
        },
        schema=EGO_MOTION_SCHEMA,
    )


def _window(t: np.ndarray, start: int, end: int) -> slice:
    return slice(int(np.searchsorted(t, start, side="left")), int(np.searchsorted(t, end, side="left")))


def _mean(v: np.ndarray) -> float:
    return float(np.mean(v)) if v.shape[0] else float("nan")


def scene_stats(
    table: pa.Table, vehicle_id: str, drive_id: str, created_us: int, cfg: TransformConfig
) -> pa.Table:
    """One row per scene of the drive, with the contract's columns."""
    sig = _split(table)
    g = _grid(sig[SRC_POSE], cfg)
    if g is None:
        return SCENE_STATS_SCHEMA.empty_table()
    window_ns = round(cfg.scene_seconds * 1e9)
    t0 = int(g.t[0])
    ticks_per_scene = cfg.scene_seconds * cfg.grid_hz
    rows: dict[str, list[object]] = {f.name: [] for f in SCENE_STATS_SCHEMA}
    can, gnss, lidar, camera = sig[SRC_CAN], sig[SRC_GNSS], sig[SRC_LIDAR], sig[SRC_CAMERA]
    for k in range(int(g.scene[-1]) + 1):
        in_scene = g.scene == k
        ticks = int(np.count_nonzero(in_scene))
        if ticks < cfg.min_scene_coverage * ticks_per_scene:
            continue
        start = t0 + k * window_ns
        end = min(start + window_ns, int(g.t[in_scene][-1]) + int(1e9 / cfg.grid_hz))
        cw, gw, lw, mw = (_window(s.t, start, end) for s in (can, gnss, lidar, camera))
        brake = can.b[cw]
        brake_max = float(np.max(brake)) if brake.shape[0] else float("nan")
        fixes = gnss.a[gw]
        rows["scene_id"].append(scene_id(vehicle_id, drive_id, k))
        rows["vehicle_id"].append(vehicle_id)
        rows["drive_id"].append(drive_id)
        rows["event_timestamp"].append(start // 1000)
        rows["scene_end"].append(end // 1000)
        rows["created_timestamp"].append(created_us)
        rows["speed_mean_mps"].append(float(np.mean(g.speed[in_scene])))
        rows["speed_max_mps"].append(float(np.max(g.speed[in_scene])))
        rows["accel_p95_mps2"].append(float(np.percentile(np.abs(g.accel[in_scene]), 95)))
        rows["jerk_abs_mean_mps3"].append(float(np.mean(np.abs(g.jerk[in_scene]))))
        rows["yaw_rate_abs_mean_rps"].append(float(np.mean(np.abs(g.yaw_rate[in_scene]))))
        rows["gnss_fix_ratio"].append(float(np.mean(fixes > 0.5)) if fixes.shape[0] else 0.0)
        rows["gnss_h_accuracy_m"].append(_mean(gnss.b[gw]))
        rows["lidar_points_mean"].append(_mean(lidar.a[lw]))
        rows["camera_frames"].append(int(mw.stop - mw.start))
        rows["brake_pressure_max"].append(brake_max)
        rows["hard_brake"].append(int(brake.shape[0] > 0 and brake_max > cfg.hard_brake_bar))
    arrays = []
    for f in SCENE_STATS_SCHEMA:
        if f.type == TS:
            arrays.append(pa.array(rows[f.name], pa.int64()).cast(TS))
        else:
            arrays.append(pa.array(rows[f.name], f.type))
    return pa.Table.from_arrays(arrays, schema=SCENE_STATS_SCHEMA)


LIDAR_STATS_FIELDS = (
    ("point_count", pa.int64()),
    ("range_mean_m", pa.float64()),
    ("range_max_m", pa.float64()),
    ("z_min_m", pa.float64()),
    ("z_max_m", pa.float64()),
    ("intensity_mean", pa.float64()),
)


def lidar_stats(data: pa.Array, stride: pa.Array, fields: pa.Array) -> dict[str, pa.Array]:
    """Per-cloud statistics from packed float32 points (x, y, z and optional intensity).

    Clouds with the same point layout (stride and float32 field offsets) are computed together:
    their points are joined into one array and reduced per cloud, not cloud by cloud.
    """
    data = one_array(data)
    n_rows = len(data)
    strides = np.nan_to_num(stride.to_numpy(zero_copy_only=False).astype(np.float64)).astype(np.int64)
    lengths = pc.fill_null(pc.binary_length(data), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    counts = np.where(strides > 0, lengths // np.maximum(strides, 1), 0)
    out = {name: np.full(n_rows, np.nan) for name, _ in LIDAR_STATS_FIELDS[1:]}
    groups: dict[tuple[int, tuple[tuple[str, int], ...]], list[int]] = {}
    for i, (step, flds) in enumerate(zip(strides.tolist(), fields.to_pylist(), strict=True)):
        # FLOAT32 is 7 both in Foxglove PackedElementField.type and ROS 2 PointField.datatype.
        offsets = {f["name"]: f["offset"] for f in (flds or []) if f.get("type", f.get("datatype")) == 7}
        if counts[i] and {"x", "y", "z"} <= offsets.keys() and step % 4 == 0:
            key = (
                step,
                tuple(sorted((k, v) for k, v in offsets.items() if k in ("x", "y", "z", "intensity"))),
            )
            groups.setdefault(key, []).append(i)
    for (step, layout), rows in groups.items():
        offsets = dict(layout)
        idx = np.array(rows, dtype=np.int64)
        n = counts[idx]
        pts = _points(data, idx, n, step).reshape(-1, step // 4)
        bounds = np.concatenate([[0], np.cumsum(n)[:-1]])
        # Ranges in float32, as precise as the float32 points; sums accumulate in float64.
        x, y, z = (pts[:, offsets[k] // 4] for k in ("x", "y", "z"))
        rng = np.sqrt(x * x + y * y + z * z)
        out["range_mean_m"][idx] = np.add.reduceat(rng, bounds, dtype=np.float64) / n
        out["range_max_m"][idx] = np.maximum.reduceat(rng, bounds)
        out["z_min_m"][idx] = np.minimum.reduceat(z, bounds)
        out["z_max_m"][idx] = np.maximum.reduceat(z, bounds)
        if "intensity" in offsets:
            inten = pts[:, offsets["intensity"] // 4]
            out["intensity_mean"][idx] = np.add.reduceat(inten, bounds, dtype=np.float64) / n
    result = {"point_count": pa.array(counts, pa.int64())}
    for name, typ in LIDAR_STATS_FIELDS[1:]:
        result[name] = pa.array(out[name], typ)
    return result


def _points(data: pa.Array, rows: np.ndarray, counts: np.ndarray, step: int) -> np.ndarray:
    """The whole points of clouds ``rows`` of a binary array, joined, as float32 values.

    Clouds that lie back to back in the array's data and hold whole points only (the usual case)
    are read in place; otherwise their points are copied together.
    """
    kind = np.int64 if pa.types.is_large_binary(data.type) else np.int32
    _, offsets_buf, values = data.buffers()
    bounds = np.frombuffer(offsets_buf, dtype=kind, count=len(data) + 1, offset=data.offset * kind().itemsize)
    starts, ends = bounds[rows].astype(np.int64), bounds[rows + 1].astype(np.int64)
    if np.array_equal(ends - starts, counts * step) and np.array_equal(starts[1:], ends[:-1]):
        return np.frombuffer(
            values, dtype=np.float32, count=int(counts.sum()) * step // 4, offset=int(starts[0])
        )
    view = memoryview(values)
    return np.frombuffer(
        b"".join(view[s : s + k * step] for s, k in zip(starts.tolist(), counts.tolist(), strict=True)),
        dtype=np.float32,
    )
