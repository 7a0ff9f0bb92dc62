"""Topic mappings: validation with file:line, routing, overrides and the fingerprint digest."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml
from nuro_ml.etl import mapping

BAD_MAPPINGS = [
    (
        "version: 1\ntables:\n  ego_pose:\n    sources:\n      - schemas: [x]\n        colums: {}\n",
        "fleet.yaml:6:9: tables.ego_pose.sources[0].colums: unknown field 'colums' (did you mean 'columns'?)",
    ),
    (
        "version: 1\ntables:\n  speed:\n    sources:\n      - columns:\n          kph: twist..x\n",
        "fleet.yaml:6:11: tables.speed.sources[0].columns: column 'kph': 'twist..x' is not a field path",
    ),
    (
        "version: 1\nexclude: [/a]\nunmapped: drop\n",
        "fleet.yaml:3:11: unmapped: ",
    ),
    (
        "version: 1\ntables:\n  speed:\n    sources:\n      - columns: '*'\n        time: 'header stamp'\n",
        "fleet.yaml:6:15: tables.speed.sources[0].time: ",
    ),
    (
        "version: 1\ntables:\n  ego_pose:\n    sources:\n      - columns: {x_m: pose.x}\n",
        "missing required column(s) y_m, z_m, qx, qy, qz, qw",
    ),
    ("version: 1\ntables:\n  scene_stats:\n    sources:\n      - columns: '*'\n", "derived by the job"),
    ("version: 1\ntables: [a\n", "fleet.yaml:3:1: (document): not valid YAML"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_MAPPINGS)
def test_mapping_errors_name_file_line_and_field(text, expected):
    with pytest.raises(mapping.MappingError) as err:
        mapping.parse(text, "fleet.yaml")
    assert expected in str(err.value)


def test_missing_mapping_file_is_named(tmp_path):
    with pytest.raises(mapping.MappingError, match=r"nope\.yaml: cannot read the mapping file"):
        mapping.load(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("topic", "schema", "table"),
    [
        ("/localization/kinematic_state", "nav_msgs/msg/Odometry", "ego_pose"),
        ("/localization/pose_with_covariance", "geometry_msgs/msg/PoseWithCovarianceStamped", "ego_pose"),
        ("/ego/pose", "foxglove.PoseInFrame", "ego_pose"),
        ("/goal", "geometry_msgs/msg/PoseStamped", "ego_pose"),
        ("/sensing/gnss/ublox/nav_sat_fix", "sensor_msgs/msg/NavSatFix", "gnss_fix"),
        ("/gps", "foxglove.LocationFix", "gnss_fix"),
        ("/sensing/imu/tamagawa/imu_raw", "sensor_msgs/msg/Imu", "imu"),
        ("/imu", "nuro.sensors.Imu", "imu"),
        ("/vehicle/can", "nuro_msgs/msg/VehicleState", "vehicle_can"),
        ("/sensing/lidar/top/pointcloud_raw", "sensor_msgs/msg/PointCloud2", "lidar_payload"),
        ("/lidar", "foxglove.PointCloud", "lidar_payload"),
        ("/cam/compressed", "sensor_msgs/msg/CompressedImage", "camera_payload"),
        ("/cam/raw", "sensor_msgs/msg/Image", "camera_payload"),
        ("/cam/raw", "foxglove.RawImage", "camera_payload"),
        ("/tf", "tf2_msgs/msg/TFMessage", "tf"),
        ("/tf", "foxglove.FrameTransforms", "frame_transforms"),
        ("/tf_static", "foxglove.FrameTransform", "frame_transform"),
        ("/twist", "geometry_msgs/msg/TwistStamped", "ego_twist"),
        ("/Planning/Trajectory", "autoware_planning_msgs/msg/Trajectory", "topic_planning_trajectory"),
    ],
)
def test_builtin_mapping_routes_by_schema_whatever_the_topic(topic, schema, table):
    assert mapping.builtin().route("veh-1", topic, schema).table == table


def test_mapping_file_routes_first_then_falls_back_to_builtin():
    spec = mapping.parse(
        "version: 1\n"
        "exclude: ['/debug/*']\n"
        "tables:\n"
        "  wheel:\n"
        "    sources:\n"
        "      - schemas: [acme_msgs/WheelSpeed]\n"
        "        topics: ['/vehicle/*']\n"
        "        columns: '*'\n"
        "overrides:\n"
        "  - vehicles: ['gen3-*']\n"
        "    tables:\n"
        "      gen3_pose:\n"
        "        sources:\n"
        "          - schemas: [nav_msgs/msg/Odometry]\n"
        "            columns: {x: pose.pose.position.x}\n",
        "fleet.yaml",
    )
    assert spec.route("v", "/vehicle/wheel", "acme_msgs/msg/WheelSpeed").table == "wheel"
    assert spec.route("v", "/other/wheel", "acme_msgs/msg/WheelSpeed").table == "topic_other_wheel"
    assert spec.route("v", "/debug/x", "nav_msgs/msg/Odometry").table is None
    assert spec.route("v", "/odom", "nav_msgs/msg/Odometry").table == "ego_pose"
    assert spec.route("gen3-7", "/odom", "nav_msgs/msg/Odometry").table == "gen3_pose"
    assert spec.digest_for("gen3-7") != spec.digest_for("v") == spec.digest_for("w")
    changed = mapping.parse(spec.text.replace("'/debug/*'", "'/debug2/*'"), "fleet.yaml")
    assert changed.digest_for("v") != spec.digest_for("v")


def test_unmapped_fail_names_topic_schema_and_mapping():
    spec = mapping.parse("version: 1\nunmapped: fail\nbuiltin: false\n", "fleet.yaml")
    with pytest.raises(mapping.UnmappedTopicError) as err:
        spec.route("v", "/odom", "nav_msgs/msg/Odometry")
    assert "'/odom'" in str(err.value) and "nav_msgs/msg/Odometry" in str(err.value)
    assert "fleet.yaml" in str(err.value)


def test_json_schema_is_shipped_and_accepts_the_builtin_mapping():
    shipped = json.loads(mapping.BUILTIN_PATH.with_name("mapping.schema.json").read_text())
    assert shipped == mapping.json_schema()
    jsonschema.validate(yaml.safe_load(mapping.BUILTIN_PATH.read_text()), shipped)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"version": 1, "unmapped": "drop"}, shipped)
