"""Feast objects the telemetry stream pushes to: ``vehicle_live_state`` through ``vehicle_live_push``.

Import them into a feature repository (a module of the repo doing
``from nuro_ml.features.stream_views import *``) to serve live vehicle state. The push source's
batch source is the stream's own ``telemetry`` table (``<etl output>/stream/telemetry``), so
``feast materialize`` and point-in-time joins read the same rows the stream pushed online.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Float64, String

from nuro_ml import settings
from nuro_ml.etl.stream_tables import PUSH_SOURCE, STREAM_DIR, TELEMETRY_TABLE

__all__ = ["vehicle", "vehicle_live_push", "vehicle_live_state"]

vehicle = Entity(
    name="vehicle",
    join_keys=["vehicle_id"],
    value_type=ValueType.STRING,
    description="A test vehicle of the fleet.",
)

vehicle_live_push = PushSource(
    name=PUSH_SOURCE,
    batch_source=FileSource(
        name="vehicle_live_telemetry",
        path=str(settings.etl_output_dir() / STREAM_DIR / TELEMETRY_TABLE),
        timestamp_field="event_timestamp",
        field_mapping={"event_time": "event_timestamp"},
        description="Live telemetry as the stream landed it (Spark file sink output).",
    ),
    description="Latest vehicle state from the telemetry stream (segments and live records).",
)

vehicle_live_state = FeatureView(
    name="vehicle_live_state",
    entities=[vehicle],
    ttl=timedelta(hours=1),
    schema=[
        Field(name="vehicle_id", dtype=String),
        Field(name="speed_mps", dtype=Float64, description="Ego speed (m/s)."),
        Field(name="brake_pressure_bar", dtype=Float64, description="Brake pressure (bar)."),
        Field(name="steering_angle_rad", dtype=Float64, description="Steering angle (rad)."),
    ],
    source=vehicle_live_push,
    online=True,
    description="What a vehicle is doing now, seconds behind the fleet.",
)


def write_repo(path: Path, *, project: str, redis_connection_string: str) -> Path:
    """A Feast repository at ``path`` serving these objects from a Redis online store.

    The repository's module imports this one, so ``feast apply`` in it registers exactly the
    stream's entity, push source and view; the registry is a file inside the repository.
    """
    path.mkdir(parents=True, exist_ok=True)
    (path / "feature_store.yaml").write_text(
        f"project: {project}\n"
        "provider: local\n"
        "registry:\n  registry_type: file\n  path: registry.db\n  cache_ttl_seconds: 0\n"
        "online_store:\n  type: redis\n"
        f"  connection_string: {redis_connection_string}\n"
        "offline_store:\n  type: file\n"
        "entity_key_serialization_version: 3\n"
    )
    (path / "live.py").write_text("from nuro_ml.features.stream_views import *  # noqa: F403\n")
    from feast import FeatureStore

    FeatureStore(repo_path=str(path)).apply([vehicle, vehicle_live_push, vehicle_live_state])
    return path
