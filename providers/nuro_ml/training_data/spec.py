"""What a training data set is made of: table, days, vehicles, input channels, windows, shards."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import Any

#: Numeric per-tick columns of the ETL's ``ego_motion`` table (10 Hz grid), usable as inputs.
EGO_MOTION_CHANNELS = (
    "speed_mps",
    "accel_mps2",
    "jerk_mps3",
    "yaw_rate_rps",
    "can_speed_mps",
    "steering_angle_rad",
    "imu_yaw_rate_rps",
    "imu_accel_x_mps2",
    "gnss_h_std_m",
    "brake_pressure_bar",
)
#: Inputs of the hard-brake detector: odometry, IMU and CAN speed/steering. The brake line
#: pressure is what the label is made of, so it is never an input.
DEFAULT_CHANNELS = (
    "speed_mps",
    "accel_mps2",
    "jerk_mps3",
    "yaw_rate_rps",
    "can_speed_mps",
    "steering_angle_rad",
    "imu_yaw_rate_rps",
    "imu_accel_x_mps2",
)
SUPPORTED_TABLES = ("ego_motion",)


class DatasetSpecError(ValueError):
    """A dataset spec field is invalid; the message names the field."""


@dataclass(frozen=True)
class DatasetSpec:
    """A windowed training set cut from the ETL output.

    :param start: first day included.
    :param end: last day included.
    :param vehicles: vehicle ids; empty means every vehicle found under the table.
    :param table: ETL table the windows are cut from.
    :param channels: per-tick input columns, in the order the model sees them.
    :param label_column: column the label is derived from (never an input).
    :param label_threshold: a window is positive when ``label_column`` exceeds this anywhere in it.
    :param window_ticks: ticks per window (10 Hz grid: 20 ticks = 2 s).
    :param stride_ticks: ticks between the starts of two windows of a drive.
    :param shard_rows: windows per shard.
    :param holdout_fraction: share of drives held out for evaluation (whole drives, never windows).
    :param seed: seed of the row order inside shards.
    """

    start: date
    end: date
    vehicles: tuple[str, ...] = ()
    table: str = "ego_motion"
    channels: tuple[str, ...] = DEFAULT_CHANNELS
    label_column: str = "brake_pressure_bar"
    label_threshold: float = 45.0
    window_ticks: int = 20
    stride_ticks: int = 5
    shard_rows: int = 4096
    holdout_fraction: float = 0.25
    seed: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.end < self.start:
            problems.append(f"end {self.end} is before start {self.start}")
        if self.table not in SUPPORTED_TABLES:
            problems.append(f"table {self.table!r} is not one of {list(SUPPORTED_TABLES)}")
        if not self.channels:
            problems.append("channels is empty")
        unknown = [c for c in self.channels if c not in EGO_MOTION_CHANNELS]
        if unknown:
            problems.append(f"channels {unknown} are not numeric columns of {self.table}")
        if len(set(self.channels)) != len(self.channels):
            problems.append("channels has duplicates")
        if self.label_column not in EGO_MOTION_CHANNELS:
            problems.append(f"label_column {self.label_column!r} is not a column of {self.table}")
        if self.label_column in self.channels:
            problems.append(f"label_column {self.label_column!r} is also an input channel (label leak)")
        if self.window_ticks < 2:
            problems.append(f"window_ticks must be at least 2, got {self.window_ticks}")
        if self.stride_ticks < 1:
            problems.append(f"stride_ticks must be at least 1, got {self.stride_ticks}")
        if self.shard_rows < 1:
            problems.append(f"shard_rows must be at least 1, got {self.shard_rows}")
        if not 0.0 < self.holdout_fraction < 1.0:
            problems.append(f"holdout_fraction must be between 0 and 1, got {self.holdout_fraction}")
        if any(not v or "/" in v for v in self.vehicles):
            problems.append(f"vehicles {list(self.vehicles)} has an empty id or one with '/'")
        if problems:
            raise DatasetSpecError("dataset spec: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> DatasetSpec:
        """Build from plain values (ISO dates, lists), as a DAG param or JSON gives them."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise DatasetSpecError(f"dataset spec: unknown field(s) {unknown}; known: {sorted(known)}")
        values = dict(raw)
        for name in ("start", "end"):
            if name not in values:
                raise DatasetSpecError(f"dataset spec: field {name!r} is required")
            value = values[name]
            if isinstance(value, str):
                try:
                    values[name] = date.fromisoformat(value[:10])
                except ValueError as exc:
                    raise DatasetSpecError(f"dataset spec: field {name!r}: {value!r} is not a date") from exc
        for name in ("vehicles", "channels"):
            if name in values:
                value = values[name]
                if isinstance(value, str):
                    value = [v for v in value.split(",") if v]
                values[name] = tuple(value)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["start"], out["end"] = self.start.isoformat(), self.end.isoformat()
        out["vehicles"], out["channels"] = list(self.vehicles), list(self.channels)
        out["extra"] = dict(self.extra)
        return out

    def days(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range((self.end - self.start).days + 1)]

    def fingerprint(self) -> str:
        """Hash of everything that shapes the shards (not where they are read from or written to)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]
