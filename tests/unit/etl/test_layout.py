"""Finding recordings: path templates, rosbag2 folders, placement by start time and metadata."""

from __future__ import annotations

from datetime import date

import pytest
from nuro_ml.etl import layout
from nuro_ml.etl.job import ETLJobConfig, discover

from tests.unit.etl import field_logs

DAY = date(2024, 11, 24)  # field_logs.T0_NS is 2024-11-24T16:00:00Z


def _touch(root, rel):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return str(path)


@pytest.mark.parametrize(
    ("template", "files", "expected"),
    [
        (
            "hive",
            [
                "date=2024-11-24/vehicle=v1/d0.mcap",
                "date=2024-11-25/vehicle=v1/d1.mcap",
                "date=2024-11-24/x.txt",
            ],
            [("2024-11-24", "v1", "d0")],
        ),
        (
            "vehicle-date",
            ["v1/2024-11-24/a.mcap", "v2/2024-11-24/b.mcap", "v2/2024-11-23/c.mcap", "v3/notadate/d.mcap"],
            [("2024-11-24", "v1", "a"), ("2024-11-24", "v2", "b")],
        ),
        (
            "rosbag2",
            [
                "car-7/rosbag2_2024_11_24-16_00_00/rosbag2_2024_11_24-16_00_00_0.mcap",
                "car-7/rosbag2_2024_11_24-16_00_00/rosbag2_2024_11_24-16_00_00_1.mcap",
                "car-7/rosbag2_2024_11_23-09_00_00/rosbag2_2024_11_23-09_00_00_0.mcap",
                "car-7/rosbag2_2024_11_24-16_00_00/metadata.yaml",
            ],
            [
                ("2024-11-24", "car-7", "rosbag2_2024_11_24-16_00_00_0"),
                ("2024-11-24", "car-7", "rosbag2_2024_11_24-16_00_00_1"),
            ],
        ),
        (
            "fleet/{vehicle}/**/{date:%Y%m%d}_*.mcap",
            ["fleet/v9/a/b/20241124_x.mcap", "fleet/v9/20241124_y.mcap", "fleet/v9/20241125_z.mcap"],
            [("2024-11-24", "v9", "20241124_y"), ("2024-11-24", "v9", "20241124_x")],
        ),
    ],
)
def test_path_templates_find_the_days_files(tmp_path, template, files, expected):
    paths = {rel: _touch(tmp_path, rel) for rel in files}
    found = layout.PathTemplate.of(template).discover(tmp_path, {DAY}, None)
    assert [(p.day, p.vehicle, p.drive) for p in found] == expected
    assert all(p.path in paths.values() for p in found)


def test_vehicle_filter_and_bad_templates(tmp_path):
    _touch(tmp_path, "v1/2024-11-24/a.mcap")
    _touch(tmp_path, "v2/2024-11-24/b.mcap")
    found = layout.PathTemplate.of("vehicle-date").discover(tmp_path, {DAY}, {"v2"})
    assert [p.vehicle for p in found] == ["v2"]
    for bad, words in (
        ("{vehicle}/{day}/x.mcap", "unknown placeholder '{day}'"),
        ("{vehicle}/{date}.parquet", "must be relative and end in .mcap"),
        ("{date:%Y-%j}/x.mcap", "may only use %Y %m %d %H %M %S"),
    ):
        with pytest.raises(layout.LayoutError, match=words):
            layout.PathTemplate.of(bad).match("a.mcap")


def test_rosbag2_folder_without_vehicle_is_placed_by_start_time_and_metadata(tmp_path):
    def vehicle_metadata(writer):
        writer._writer.add_metadata("recording", {"vehicle_id": "robotaxi-3", "site": "sf"})

    bag = tmp_path / "rosbag2_2024_11_24-16_00_00" / "rosbag2_2024_11_24-16_00_00_0.mcap"
    field_logs.write_ros2(bag, seconds=1.0, topics=field_logs.ROS2_TOPICS[:1], extra=vehicle_metadata)
    plain = tmp_path / "drives" / "late.mcap"
    field_logs.write_ros2(plain, seconds=1.0, topics=field_logs.ROS2_TOPICS[:1])
    [found] = layout.PathTemplate.of("rosbag2_*/{drive}.mcap").discover(tmp_path, {DAY}, None)
    assert (found.day, found.vehicle, found.drive) == ("2024-11-24", "robotaxi-3", bag.stem)
    assert (
        layout.PathTemplate.of("rosbag2_*/{drive}.mcap").discover(tmp_path, {date(2024, 11, 25)}, None) == []
    )
    with pytest.raises(layout.LayoutError, match=r"late\.mcap: no \{vehicle\} in the path template"):
        layout.PathTemplate.of("drives/{drive}.mcap").discover(tmp_path, {DAY}, None)
    cfg = ETLJobConfig(
        str(tmp_path), "out", "2024-11-24", "2024-11-25", "q", path_template="rosbag2_*/{drive}.mcap"
    )
    assert [p.path for p in discover(cfg)] == [str(bag)]
