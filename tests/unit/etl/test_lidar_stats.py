"""Point-cloud statistics, computed for many clouds at once, equal those of each cloud on its own.

The reference computes each cloud in float64; ranges are computed in float32 (the points'
precision), so values agree to float32 precision.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from nuro_ml.etl.transforms import LIDAR_STATS_FIELDS, lidar_stats

XYZI = [{"name": n, "offset": 4 * k, "type": 7} for k, n in enumerate(("x", "y", "z", "intensity"))]
# ROS 2 PointField: datatype 7 is FLOAT32; x, y, z after a 4-byte ring index, no intensity.
RING_XYZ = [{"name": "ring", "offset": 0, "datatype": 4}] + [
    {"name": n, "offset": 4 + 4 * k, "datatype": 7} for k, n in enumerate(("x", "y", "z"))
]


def _one(blob: bytes, step: int, fields: list[dict]) -> dict[str, float]:
    """The statistics of one cloud, computed on it alone."""
    offsets = {f["name"]: f["offset"] for f in fields if f.get("type", f.get("datatype")) == 7}
    n = len(blob) // step if step else 0
    nan = float("nan")
    out: dict[str, float] = {"point_count": n}
    if n == 0 or not {"x", "y", "z"} <= offsets.keys() or step % 4:
        return out | {name: nan for name, _ in LIDAR_STATS_FIELDS[1:]}
    pts = np.frombuffer(blob[: n * step], dtype=np.float32).reshape(n, step // 4)
    x, y, z = (pts[:, offsets[k] // 4].astype(np.float64) for k in ("x", "y", "z"))
    rng = np.sqrt(x * x + y * y + z * z)
    inten = pts[:, offsets["intensity"] // 4].astype(np.float64) if "intensity" in offsets else None
    return out | {
        "range_mean_m": rng.mean(),
        "range_max_m": rng.max(),
        "z_min_m": z.min(),
        "z_max_m": z.max(),
        "intensity_mean": inten.mean() if inten is not None else nan,
    }


def _cloud(rng: np.random.Generator, points: int, width: int) -> bytes:
    return rng.normal(0.0, 20.0, size=points * width).astype(np.float32).tobytes()


@pytest.mark.parametrize("large", [False, True])
def test_many_clouds_equal_each_cloud_alone(large):
    rng = np.random.default_rng(3)
    rows: list[tuple[bytes, int, list[dict]]] = []
    for i in range(30):
        if i % 7 == 3:
            rows.append((_cloud(rng, 50, 4), 16, RING_XYZ))  # another point layout
        elif i % 11 == 5:
            rows.append((b"", 16, XYZI))  # an empty cloud
        elif i % 13 == 6:
            rows.append((_cloud(rng, 10, 4) + b"\x01\x02", 16, XYZI))  # a partial trailing point
        elif i == 8:
            rows.append((_cloud(rng, 5, 4), 16, XYZI[:2]))  # no z: no statistics
        elif i == 9:
            rows.append((_cloud(rng, 5, 4), 0, XYZI))  # no stride
        else:
            rows.append((_cloud(rng, int(rng.integers(1, 300)), 4), 16, XYZI))
    field_type = pa.list_(pa.struct([("name", pa.string()), ("offset", pa.int64()), ("type", pa.int64())]))
    fields = pa.array(
        [
            [
                {"name": f["name"], "offset": f["offset"], "type": f.get("type", f.get("datatype"))}
                for f in flds
            ]
            for _, _, flds in rows
        ],
        field_type,
    )
    data = pa.array([blob for blob, _, _ in rows], pa.large_binary() if large else pa.binary())
    # A slice: the array does not start at its buffers' start.
    data, fields = pa.concat_arrays([pa.array([b"\0" * 64], data.type), data]).slice(1), fields
    got = lidar_stats(data, pa.array([s for _, s, _ in rows], pa.int32()), fields)
    for i, (blob, step, flds) in enumerate(rows):
        expected = _one(blob, step, flds)
        for name, _ in LIDAR_STATS_FIELDS:
            value, want = got[name][i].as_py(), expected[name]
            if isinstance(want, float) and math.isnan(want):
                assert math.isnan(value), (i, name)
            else:
                assert value == pytest.approx(want, rel=1e-6), (i, name)


def test_clouds_back_to_back_equal_each_cloud_alone():
    # Whole points only and one layout: the points are read in place from the array's data.
    rng = np.random.default_rng(5)
    blobs = [_cloud(rng, int(rng.integers(1, 200)), 4) for _ in range(12)]
    fields = pa.array([[{"name": f["name"], "offset": f["offset"], "type": 7} for f in XYZI]] * 12)
    got = lidar_stats(pa.array(blobs, pa.binary()), pa.array([16] * 12, pa.int64()), fields)
    for i, blob in enumerate(blobs):
        expected = _one(blob, 16, XYZI)
        for name, _ in LIDAR_STATS_FIELDS:
            assert got[name][i].as_py() == pytest.approx(expected[name], rel=1e-6), (i, name)
