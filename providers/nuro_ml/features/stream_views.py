"""Feast objects the telemetry stream pushes to: ``vehicle_live_state`` through ``vehicle_live_push``.

Import them into a feature repository (a module of the repo doing
``from nuro_ml.features.stream_views import *``; the platform's ``feature_repo/`` does) to serve
live vehicle state. The push source's batch source is the live-state table
(``<etl output>/live_state``, :mod:`nuro_ml.etl.live_state`): batch ``vehicle_can`` partitions,
the stream's rows after the batch's last date, and the live records, so ``feast materialize``
and point-in-time joins read the rows the stream pushed online, superseded by the batch where
the batch has run. The module's objects read the platform's ETL output
(``settings.etl_output_dir()``); :func:`live_objects` builds them over another one.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Float64, String

from nuro_ml import settings
from nuro_ml.etl.stream_tables import LIVE_STATE_TABLE, PUSH_SOURCE

__all__ = ["live_objects", "vehicle", "vehicle_live_push", "vehicle_live_state"]


def live_objects(output_path: str | Path) -> tuple[Entity, PushSource, FeatureView]:
    """The entity, push source and view over the ETL output at ``output_path``."""
    entity = Entity(
        name="vehicle",
        join_keys=["vehicle_id"],
        value_type=ValueType.STRING,
        description="A test vehicle of the fleet.",
    )
    push = PushSource(
        name=PUSH_SOURCE,
        batch_source=FileSource(
            name="vehicle_live_history",
            path=str(Path(output_path) / LIVE_STATE_TABLE),
            timestamp_field="event_timestamp",
            description="Vehicle state from the batch ETL, then the stream's segments and live records.",
        ),
        description="Latest vehicle state from the telemetry stream (segments and live records).",
    )
    view = FeatureView(
        name="vehicle_live_state",
        entities=[entity],
        ttl=timedelta(hours=1),
        schema=[
            Field(name="vehicle_id", dtype=String),
            Field(name="speed_mps", dtype=Float64, description="Ego speed (m/s)."),
            Field(name="brake_pressure_bar", dtype=Float64, description="Brake pressure (bar)."),
            Field(name="steering_angle_rad", dtype=Float64, description="Steering angle (rad)."),
        ],
        source=push,
        online=True,
        description="What a vehicle is doing now, seconds behind the fleet.",
    )
    return entity, push, view


vehicle, vehicle_live_push, vehicle_live_state = live_objects(settings.etl_output_dir())


def write_repo(
    path: Path, *, project: str, redis_connection_string: str, output_path: str | Path | None = None
) -> Path:
    """A Feast repository at ``path`` serving these objects from a Redis online store.

    The repository's module builds them with :func:`live_objects` over ``output_path`` (default
    the platform's ETL output), so ``feast apply`` in it registers exactly the stream's entity,
    push source and view; the registry is a file inside the repository.
    """
    path.mkdir(parents=True, exist_ok=True)
    output = Path(output_path) if output_path is not None else settings.etl_output_dir()
    (path / "feature_store.yaml").write_text(
        f"project: {project}\n"
        "provider: local\n"
        "registry:\n  registry_type: file\n  path: registry.db\n  cache_ttl_seconds: 0\n"
        "online_store:\n  type: redis\n"
        f"  connection_string: {redis_connection_string}\n"
        "offline_store:\n  type: file\n"
        "entity_key_serialization_version: 3\n"
    )
    (path / "live.py").write_text(
        "from nuro_ml.features.stream_views import live_objects\n\n"
        f"vehicle, vehicle_live_push, vehicle_live_state = live_objects({str(output)!r})\n"
    )
    from feast import FeatureStore

    FeatureStore(repo_path=str(path)).apply(list(live_objects(output)))
    return path
