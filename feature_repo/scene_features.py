"""Feast definitions for autonomous-vehicle scenes.

One source, the ETL's per-scene table ``scene_stats`` (hive-partitioned Parquet under the
platform's data directory, so every process that shares ``NURO_ML_DATA_DIR`` reads the same
files), feeds feature views keyed by scene and one keyed by vehicle. ``scene_training`` is the
feature service training jobs read through ``nuro_ml.features.training.load_training_frame``.
"""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64, String
from nuro_ml import settings

vehicle = Entity(
    name="vehicle",
    join_keys=["vehicle_id"],
    value_type=ValueType.STRING,
    description="A test vehicle of the fleet.",
)

scene = Entity(
    name="scene",
    join_keys=["scene_id"],
    value_type=ValueType.STRING,
    description="A fixed window (10 s by default) of one drive: <vehicle_id>_<drive_id>_<index>.",
)

scene_stats = FileSource(
    name="scene_stats",
    path=str(settings.etl_output_dir() / "scene_stats"),
    timestamp_field="event_timestamp",
    created_timestamp_column="created_timestamp",
    description="Per-scene statistics from the drive-log ETL, partitioned by date and vehicle.",
)

# Scene features describe a finished scene and never change afterwards (except through an ETL
# rerun, which rewrites the row with a newer created_timestamp), so a day of TTL is plenty for
# point-in-time joins on the scene's own start time.
_SCENE_TTL = timedelta(days=1)

scene_ego_motion = FeatureView(
    name="scene_ego_motion",
    entities=[scene],
    ttl=_SCENE_TTL,
    schema=[
        Field(name="scene_id", dtype=String),
        Field(name="speed_mean_mps", dtype=Float64, description="Mean ego speed (m/s)."),
        Field(name="speed_max_mps", dtype=Float64, description="Peak ego speed (m/s)."),
        Field(name="accel_p95_mps2", dtype=Float64, description="95th percentile |acceleration| (m/s^2)."),
        Field(name="jerk_abs_mean_mps3", dtype=Float64, description="Mean |jerk| (m/s^3)."),
        Field(name="yaw_rate_abs_mean_rps", dtype=Float64, description="Mean |yaw rate| (rad/s)."),
    ],
    source=scene_stats,
    online=True,
    description="Ego-motion statistics of a scene, from /ego/pose.",
    tags={"sensor": "ego_pose"},
)

scene_gnss_quality = FeatureView(
    name="scene_gnss_quality",
    entities=[scene],
    ttl=_SCENE_TTL,
    schema=[
        Field(name="scene_id", dtype=String),
        Field(name="gnss_fix_ratio", dtype=Float64, description="Share of fixes with a valid status."),
        Field(name="gnss_h_accuracy_m", dtype=Float64, description="Mean horizontal std dev (m)."),
    ],
    source=scene_stats,
    online=True,
    description="GNSS fix quality during a scene, from /gnss/fix.",
    tags={"sensor": "gnss"},
)

scene_lidar_density = FeatureView(
    name="scene_lidar_density",
    entities=[scene],
    ttl=_SCENE_TTL,
    schema=[
        Field(name="scene_id", dtype=String),
        Field(name="lidar_points_mean", dtype=Float64, description="Mean points per lidar sweep."),
        Field(name="camera_frames", dtype=Int64, description="Front camera frames in the scene."),
    ],
    source=scene_stats,
    online=True,
    description="Sensor density of a scene: lidar returns per sweep and camera frame count.",
    tags={"sensor": "lidar"},
)

vehicle_last_scene = FeatureView(
    name="vehicle_last_scene",
    entities=[vehicle],
    ttl=timedelta(days=7),
    schema=[
        Field(name="vehicle_id", dtype=String),
        Field(name="last_speed_mean_mps", dtype=Float64),
        Field(name="last_brake_pressure_max", dtype=Float64),
    ],
    source=FileSource(
        name="scene_stats_by_vehicle",
        path=str(settings.etl_output_dir() / "scene_stats"),
        timestamp_field="event_timestamp",
        created_timestamp_column="created_timestamp",
        field_mapping={
            "speed_mean_mps": "last_speed_mean_mps",
            "brake_pressure_max": "last_brake_pressure_max",
        },
        description="scene_stats read per vehicle: the latest scene wins.",
    ),
    online=True,
    description="What a vehicle was doing in its most recent scene (for online monitoring).",
)


@on_demand_feature_view(
    sources=[scene_ego_motion],
    schema=[
        Field(name="speed_peak_ratio", dtype=Float64),
        Field(name="jerk_per_speed", dtype=Float64),
    ],
    mode="pandas",
    description="Shape of the speed profile: peak over mean speed, and jerk per unit of speed.",
)
def scene_motion_ratios(inputs: pd.DataFrame) -> pd.DataFrame:
    # A parked vehicle has zero mean speed; the ratios are undefined there rather than infinite.
    mean = inputs["speed_mean_mps"].where(inputs["speed_mean_mps"] > 0.1)
    out = pd.DataFrame()
    out["speed_peak_ratio"] = (inputs["speed_max_mps"] / mean).astype("float64")
    out["jerk_per_speed"] = (inputs["jerk_abs_mean_mps3"] / mean).astype("float64")
    return out


scene_training = FeatureService(
    name="scene_training",
    features=[scene_ego_motion, scene_gnss_quality, scene_lidar_density],
    description="Ego-motion, GNSS and lidar features of a scene, for hard-brake models.",
)
