"""Arrivals for the telemetry stream: segments landing and live records, at a fixed rate.

``nuro-ml gen-logs --stream`` drives it; tests and the streaming benchmark call
:class:`Arrivals` directly. Segments are the generator's drives cut to ``segment_seconds``
(10 s by default, at its default topic rates and sizes), written under
``<landing>/date=/vehicle=/<drive_id>.mcap`` to a temporary name and renamed into place. Live
records go to a Redis Stream with ``XADD``: ``vehicle_id``, ``record_id`` (unique, so a
re-publish is recognised as a duplicate), ``event_time_ns`` and three CAN signals.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from nuro_ml.etl.generator import DriveSpec, drive_path, write_drive_file

if TYPE_CHECKING:
    import redis

#: Segments per vehicle per day (the generator staggers drives 30 min apart from 07:00).
_SEGMENTS_PER_DAY = 24
_BASE_DAY = date(2026, 1, 5)


def segment_spec(vehicle_id: str, index: int, *, seed: int = 0, seconds: float = 10.0) -> DriveSpec:
    """The ``index``-th segment of ``vehicle_id``: deterministic, unique per (vehicle, index)."""
    day = _BASE_DAY + timedelta(days=index // _SEGMENTS_PER_DAY)
    return DriveSpec(
        vehicle_id=vehicle_id,
        day=day,
        drive_index=index % _SEGMENTS_PER_DAY,
        drive_seconds=seconds,
        seed=seed,
    )


def land_segment(landing: Path, spec: DriveSpec) -> Path | None:
    """Write one segment into the landing area; ``None`` if it already landed."""
    path = drive_path(landing, spec)
    return path if write_drive_file(path, spec) else None


@dataclass
class Arrivals:
    """Paced arrivals; ``run`` lands segments and publishes records until its counts are reached."""

    vehicles: list[str]
    landing: Path | None = None
    segments_per_second: float = 1.0
    segments: int = 0
    segment_seconds: float = 10.0
    redis_client: redis.Redis | None = None
    stream: str = "telemetry"
    records_per_second: float = 1000.0
    records: int = 0
    seed: int = 0
    #: Filled by ``run``: landed segment paths and the number of records published.
    landed: list[Path] = field(default_factory=list)
    published: int = 0
    #: Event time of the last record (ns): records get distinct, increasing microseconds.
    _last_ns: int = 0

    def _publish(self, n: int) -> None:
        assert self.redis_client is not None
        rng = np.random.default_rng([self.seed, self.published])
        pipe = self.redis_client.pipeline(transaction=False)
        for i in range(n):
            self._last_ns = max(time.time_ns(), self._last_ns + 1000)
            seq = self.published + i
            vehicle = self.vehicles[seq % len(self.vehicles)]
            pipe.xadd(
                self.stream,
                {
                    "vehicle_id": vehicle,
                    "record_id": f"{vehicle}:{self.seed}:{seq}",
                    "event_time_ns": str(self._last_ns),
                    "speed_mps": f"{rng.uniform(0, 30):.6f}",
                    "brake_pressure_bar": f"{rng.uniform(0, 80):.6f}",
                    "steering_angle_rad": f"{rng.uniform(-0.5, 0.5):.6f}",
                },
            )
        pipe.execute()
        self.published += n

    def run(self, *, tick: float = 0.1) -> None:
        """Arrive at the configured rates; each tick catches up to where the rates should be."""
        start = time.monotonic()
        want_segments = self.segments if self.landing is not None else 0
        want_records = self.records if self.redis_client is not None else 0
        while len(self.landed) < want_segments or self.published < want_records:
            elapsed = time.monotonic() - start
            due = min(want_records, int(elapsed * self.records_per_second) + 1) - self.published
            if due > 0:
                self._publish(due)
            if len(self.landed) < min(want_segments, int(elapsed * self.segments_per_second) + 1):
                assert self.landing is not None
                index = len(self.landed)
                vehicle = self.vehicles[index % len(self.vehicles)]
                spec = segment_spec(
                    vehicle, index // len(self.vehicles), seed=self.seed, seconds=self.segment_seconds
                )
                path = land_segment(self.landing, spec)
                self.landed.append(path if path is not None else drive_path(self.landing, spec))
                continue
            time.sleep(tick)
