"""Dataset spec validation and the window cutter, on a hand-made ego_motion table."""

from __future__ import annotations

from datetime import date

import numpy as np
import pyarrow as pa
import pytest
from nuro_ml.training_data.spec import DatasetSpec, DatasetSpecError
from nuro_ml.training_data.windows import build_windows, to_arrays


def _ego(drive: str, n: int, brake_at: int | None, vehicle: str = "veh-001") -> pa.Table:
    brake = np.zeros(n)
    if brake_at is not None:
        brake[brake_at] = 60.0
    values = {c: np.arange(n, dtype=np.float64) for c in DatasetSpec.__dataclass_fields__["channels"].default}
    return pa.table(
        {
            "vehicle_id": [vehicle] * n,
            "drive_id": [drive] * n,
            "t_ns": np.arange(n, dtype=np.int64) * 100_000_000,
            "brake_pressure_bar": brake,
            **values,
        }
    )


def test_windows_label_brake_pressure_and_never_span_drives() -> None:
    spec = DatasetSpec(start=date(2026, 1, 1), end=date(2026, 1, 1), window_ticks=4, stride_ticks=2)
    table = pa.concat_tables([_ego("drv-b", 10, brake_at=5), _ego("drv-a", 6, brake_at=None)])
    windows = build_windows(table, spec)
    # drv-a (sorted first): starts 0, 2 -> 2 windows; drv-b: starts 0, 2, 4, 6 -> 4 windows.
    assert windows["drive_id"].to_pylist() == ["drv-a"] * 2 + ["drv-b"] * 4
    assert windows["y"].to_pylist() == [0, 0, 0, 1, 1, 0]
    x, y = to_arrays(windows, len(spec.channels))
    assert x.shape == (6, 4, len(spec.channels)) and x.dtype == np.float32
    # First window of drv-b: ticks 0..3 of every channel, tick-major.
    assert x[2, :, 0].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert y.tolist() == [0, 0, 0, 1, 1, 0]


def test_nan_inputs_become_zero() -> None:
    spec = DatasetSpec(start=date(2026, 1, 1), end=date(2026, 1, 1), window_ticks=3, stride_ticks=3)
    table = _ego("drv", 3, None)
    table = table.set_column(
        table.column_names.index("imu_accel_x_mps2"), "imu_accel_x_mps2", pa.array([np.nan] * 3)
    )
    x, _ = to_arrays(build_windows(table, spec), len(spec.channels))
    assert not np.isnan(x).any()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"channels": ["speed_mps", "brake_pressure_bar"]}, "label leak"),
        ({"channels": ["speed_mps", "wheel_rpm"]}, "['wheel_rpm'] are not numeric columns"),
        ({"end": "2025-12-31"}, "end 2025-12-31 is before start 2026-01-01"),
        ({"table": "imu"}, "table 'imu' is not one of"),
        ({"shard_rows": 0}, "shard_rows must be at least 1"),
        ({"holdout_fraction": 1.0}, "holdout_fraction must be between 0 and 1"),
        ({"start": "yesterday"}, "field 'start': 'yesterday' is not a date"),
        ({"shards": 3}, "unknown field(s) ['shards']"),
    ],
)
def test_bad_spec_names_the_field(fields: dict, message: str) -> None:
    raw = {"start": "2026-01-01", "end": "2026-01-02", **fields}
    with pytest.raises(DatasetSpecError) as err:
        DatasetSpec.from_dict(raw)
    assert message in str(err.value)


def test_from_dict_round_trips_and_fingerprint_follows_content() -> None:
    spec = DatasetSpec.from_dict(
        {"start": "2026-01-01T00:00:00+00:00", "end": "2026-01-03", "vehicles": "veh-1,veh-2"}
    )
    assert spec.vehicles == ("veh-1", "veh-2") and len(spec.days()) == 3
    assert DatasetSpec.from_dict(spec.to_dict()) == spec
    assert spec.fingerprint() == DatasetSpec.from_dict(spec.to_dict()).fingerprint()
    assert spec.fingerprint() != DatasetSpec.from_dict({**spec.to_dict(), "shard_rows": 10}).fingerprint()


def test_fewer_shards_than_workers_are_striped_by_row(tmp_path) -> None:
    import pyarrow.parquet as pq
    from nuro_ml.training_data.loader import LocalSource, ShardLoader

    spec = DatasetSpec(start=date(2026, 1, 1), end=date(2026, 1, 1), window_ticks=2, stride_ticks=1)
    windows = build_windows(_ego("drv", 12, brake_at=None), spec)  # 11 windows
    pq.write_table(windows, tmp_path / "only.parquet")
    shards = [{"uri": "s3://b/only.parquet", "rows": windows.num_rows}]
    loaders = [
        ShardLoader(shards, LocalSource(tmp_path), channels=8, batch_size=2, rank=r, world_size=3, seed=4)
        for r in range(3)
    ]
    batches = [list(loader.epoch(0)) for loader in loaders]
    # 11 rows over 3 ranks: 4, 4 and 3 rows; every rank yields the smallest share's full batches.
    assert [len(b) for b in batches] == [1, 1, 1] and loaders[0].batches_per_epoch(0) == 1
    firsts = [{float(v) for x, _ in b for v in x[:, 0, 0]} for b in batches]
    assert not (firsts[0] & firsts[1]) and not (firsts[1] & firsts[2])


def test_writable_arrays_are_one_fresh_copy_of_every_chunk() -> None:
    spec = DatasetSpec(start=date(2026, 11, 24), end=date(2026, 11, 24))
    windows = build_windows(pa.concat_tables([_ego("d1", 60, 30), _ego("d2", 60, None)]), spec)
    view_x, view_y = to_arrays(windows, len(spec.channels))
    # A batch that spans two blocks arrives as a two-chunk column, each chunk a slice.
    split = pa.concat_tables([windows.slice(1, 5), windows.slice(9, 4)])
    assert split.column("x").num_chunks == 2
    x, y = to_arrays(split, len(spec.channels), writable=True)
    assert x.flags.writeable and x.dtype == np.float32 and x.shape == (9, *view_x.shape[1:])
    np.testing.assert_array_equal(x, np.concatenate([view_x[1:6], view_x[9:13]]))
    np.testing.assert_array_equal(y, np.concatenate([view_y[1:6], view_y[9:13]]))
    x[0] = -1.0  # its own memory: the table is untouched
    np.testing.assert_array_equal(to_arrays(split, len(spec.channels))[0][0], view_x[1])
