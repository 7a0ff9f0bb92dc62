"""Apply + cached materialization on the embedded defaults (file registry, SQLite online store)."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from nuro_ml.exceptions import FeatureStoreError
from nuro_ml.features.synthetic import scene_stats_table, write_partition
from nuro_ml.hooks.feast import FeastHook
from nuro_ml.operators.feast import FeastApplyOperator, FeastMaterializeOperator

from tests.unit.features.scene_data import (
    DAY0,
    copy_repo,
    days,
    read_source,
    scene_stats_root,
    utc,
    write_days,
)

SERVICE_FEATURES = [
    "speed_mean_mps",
    "speed_max_mps",
    "accel_p95_mps2",
    "jerk_abs_mean_mps3",
    "yaw_rate_abs_mean_rps",
    "gnss_fix_ratio",
    "gnss_h_accuracy_m",
    "lidar_points_mean",
    "camera_frames",
]
VIEWS = ["scene_ego_motion", "scene_gnss_quality", "scene_lidar_density", "vehicle_last_scene"]


def _online(hook: FeastHook, scene_ids: list[str]) -> dict[str, list]:
    store = hook.store
    return store.get_online_features(
        features=store.get_feature_service("scene_training"), entity_rows=[{"scene_id": s} for s in scene_ids]
    ).to_dict()


def _source_rows(scene_ids: list[str]) -> dict[str, dict]:
    table = read_source()
    rows = table.filter(pc.is_in(table.column("scene_id"), pa.array(scene_ids))).to_pylist()
    return {r["scene_id"]: r for r in rows}


def test_materialized_values_equal_the_source(
    sqlite_hook: FeastHook, caplog: pytest.LogCaptureFixture
) -> None:
    write_days(2)
    sqlite_hook.apply()
    caplog.set_level("INFO", logger="nuro_ml.progress")
    report = sqlite_hook.materialize(start=utc(DAY0), end=utc(days(3)[-1]))

    # What the task log tells a person: rows and rate per view, computations done of all.
    written: dict[str, int] = {}
    for message in caplog.messages:
        if m := re.fullmatch(
            r"Feature view (\w+) -> sqlite: (\d+)/\2 rows \(100%\) in \S+, \S+ rows/\w+, stale 0", message
        ):
            written[m.group(1)] = written.get(m.group(1), 0) + int(m.group(2))
    # The stream's view is in the repository too; before the stream has run it has no rows.
    assert report.to_xcom()["rows"] == {**written, "vehicle_live_state": 0}
    assert "no data there yet" in report.views["vehicle_live_state"].reason
    done = r"Materializing into sqlite:\S+: 8/8 computations \(100%\) in \S+, \S+ computations/\w+"
    assert any(re.fullmatch(done + ", rows written 76", message) for message in caplog.messages)

    wanted = ["veh01_d2026030100_0000", "veh02_d2026030200_0005", "veh02_d2026030100_0003", "no_such_scene"]
    online = _online(sqlite_hook, wanted)
    source = _source_rows(wanted)
    for i, scene_id in enumerate(wanted):
        for feature in SERVICE_FEATURES:
            expected = source[scene_id][feature] if scene_id in source else None
            assert online[feature][i] == expected, (scene_id, feature)

    latest = sqlite_hook.store.get_online_features(
        features=["vehicle_last_scene:last_speed_mean_mps", "vehicle_last_scene:last_brake_pressure_max"],
        entity_rows=[{"vehicle_id": "veh01"}, {"vehicle_id": "veh02"}],
    ).to_dict()
    table = read_source().sort_by([("event_timestamp", "descending")])
    for i, vehicle in enumerate(["veh01", "veh02"]):
        newest = table.filter(pc.equal(table.column("vehicle_id"), vehicle)).slice(0, 1).to_pylist()[0]
        assert latest["last_speed_mean_mps"][i] == newest["speed_mean_mps"]
        assert latest["last_brake_pressure_max"][i] == newest["brake_pressure_max"]


def test_late_rows_are_picked_up_by_the_next_run(sqlite_hook: FeastHook) -> None:
    write_days(2)
    FeastApplyOperator(task_id="apply", feast_conn_id="").execute({})  # type: ignore[arg-type]
    day1, day2, day3 = days(3)
    first = FeastMaterializeOperator(
        task_id="mat", start=utc(day2).isoformat(), end=utc(day3).isoformat(), feast_conn_id=""
    ).execute({})  # type: ignore[arg-type]
    assert first["start"] == utc(day1).isoformat()  # one day of lookback by default
    assert first["cache_misses"] == 8 and first["cache_hits"] == 0

    # A vehicle uploads late: new scenes land in yesterday's partition after it was materialized.
    late = scene_stats_table(vehicle_id="veh01", drive_id="late", start=utc(day2, 15), scenes=3)
    write_partition(scene_stats_root(), day=day2, vehicle="veh01", table=late, name="part-00001")
    write_days(1, first=day3)
    second = FeastMaterializeOperator(
        task_id="mat", start=utc(day3).isoformat(), end=utc(days(4)[-1]).isoformat(), feast_conn_id=""
    ).execute({})  # type: ignore[arg-type]

    # day2 changed and day3 is new: misses; nothing else was recomputed.
    assert second["cache"]["scene_ego_motion"] == {"hits": 0, "misses": 2}
    assert second["rows"]["scene_ego_motion"] == 12 + 3 + 12
    online = _online(sqlite_hook, ["veh01_late_0000", "veh01_late_0002"])
    expected = _source_rows(["veh01_late_0000", "veh01_late_0002"])
    assert online["speed_mean_mps"] == [
        expected["veh01_late_0000"]["speed_mean_mps"],
        expected["veh01_late_0002"]["speed_mean_mps"],
    ]


def test_backfill_after_one_day_changed_recomputes_only_that_day(sqlite_hook: FeastHook) -> None:
    write_days(30, scenes=2)
    sqlite_hook.apply()
    start, end = utc(DAY0), utc(days(31)[-1])
    first = sqlite_hook.materialize(start=start, end=end).to_xcom()
    assert (first["cache_hits"], first["cache_misses"]) == (0, 30 * len(VIEWS))

    again = sqlite_hook.materialize(start=start, end=end).to_xcom()
    assert (again["cache_hits"], again["cache_misses"], again["rows_total"]) == (30 * len(VIEWS), 0, 0)

    changed_day = days(30)[12]
    write_days(1, first=changed_day, scenes=2, speed_offset=100.0)
    third = sqlite_hook.materialize(start=start, end=end).to_xcom()
    assert (third["cache_hits"], third["cache_misses"]) == (29 * len(VIEWS), len(VIEWS))
    assert third["rows"]["scene_ego_motion"] == 4
    scene = f"veh02_d{changed_day:%Y%m%d}00_0001"
    assert (
        _online(sqlite_hook, [scene])["speed_mean_mps"][0] == _source_rows([scene])[scene]["speed_mean_mps"]
    )
    assert _online(sqlite_hook, [scene])["speed_mean_mps"][0] > 100.0


def test_an_older_recomputation_never_replaces_a_newer_vehicle_row(sqlite_hook: FeastHook) -> None:
    write_days(3)
    sqlite_hook.apply()
    end = utc(days(4)[-1])
    sqlite_hook.materialize(start=utc(DAY0), end=end)
    before = sqlite_hook.store.get_online_features(
        features=["vehicle_last_scene:last_speed_mean_mps"], entity_rows=[{"vehicle_id": "veh01"}]
    ).to_dict()["last_speed_mean_mps"]

    write_days(1, speed_offset=50.0)  # the first day is rewritten after the third was materialized
    report = sqlite_hook.materialize(start=utc(DAY0), end=end).to_xcom()

    assert report["cache"]["vehicle_last_scene"] == {"hits": 2, "misses": 1}
    assert report["stale_rows_skipped"] == 2
    after = sqlite_hook.store.get_online_features(
        features=["vehicle_last_scene:last_speed_mean_mps"], entity_rows=[{"vehicle_id": "veh01"}]
    ).to_dict()["last_speed_mean_mps"]
    assert after == before


def test_schema_drift_fails_naming_view_and_column_before_writing(sqlite_hook: FeastHook) -> None:
    write_days(2)
    sqlite_hook.apply()
    day2 = days(2)[1]
    drifted = scene_stats_table(
        vehicle_id="veh02", drive_id=f"d{day2:%Y%m%d}00", start=utc(day2, 8), scenes=6
    )
    drifted = drifted.set_column(
        drifted.schema.get_field_index("speed_mean_mps"),
        "speed_mean_mps",
        drifted.column("speed_mean_mps").cast(pa.string()),
    )
    path = write_partition(scene_stats_root(), day=day2, vehicle="veh02", table=drifted)

    with pytest.raises(FeatureStoreError) as err:
        sqlite_hook.materialize(start=utc(DAY0), end=utc(days(3)[-1]))
    message = str(err.value)
    assert "scene_ego_motion" in message and "speed_mean_mps" in message and str(path) in message
    # Nothing was written, not even the healthy first day.
    assert _online(sqlite_hook, ["veh01_d2026030100_0000"])["speed_mean_mps"] == [None]


GNSS_ACCURACY_LINE = (
    '        Field(name="gnss_h_accuracy_m", dtype=Float64, description="Mean horizontal std dev (m)."),\n'
)


def _edit_repo(repo: Path, old: str, new: str) -> None:
    path = repo / "scene_features.py"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_apply_reports_the_registry_diff(data_dir: Path, tmp_path: Path) -> None:
    write_days(1)
    repo = copy_repo(tmp_path)
    hook = FeastHook(feast_conn_id=None, repo_path=repo)
    first = hook.apply().to_xcom()
    assert "feature_view:scene_ego_motion" in first["added"]
    assert "feature_service:scene_training" in first["added"]
    assert "on_demand_feature_view:scene_motion_ratios" in first["added"]
    assert hook.apply().to_xcom() == {
        "added": [],
        "changed": [],
        "removed": [],
        "unchanged": len(first["added"]),
        "changed_properties": {},
    }

    _edit_repo(repo, "ttl=timedelta(days=7),", "ttl=timedelta(days=14),")
    _edit_repo(
        repo,
        "    features=[scene_ego_motion, scene_gnss_quality, scene_lidar_density],",
        "    features=[scene_ego_motion, scene_lidar_density],",
    )
    with (repo / "scene_features.py").open("a") as fh:
        fh.write("\ndel scene_gnss_quality\n")
    hook = FeastHook(feast_conn_id=None, repo_path=repo)
    diff = hook.apply().to_xcom()
    assert diff["changed"] == ["feature_service:scene_training", "feature_view:vehicle_last_scene"]
    assert diff["removed"] == ["feature_view:scene_gnss_quality"]
    assert diff["added"] == []
    assert "ttl" in diff["changed_properties"]["feature_view:vehicle_last_scene"]
    assert {v.name for v in hook.store.list_feature_views()} == {
        "scene_ego_motion",
        "scene_lidar_density",
        "vehicle_last_scene",
        "vehicle_live_state",
    }


def test_a_view_reading_a_missing_column_fails_apply_and_changes_nothing(
    data_dir: Path, tmp_path: Path
) -> None:
    write_days(1)
    repo = copy_repo(tmp_path)
    FeastHook(feast_conn_id=None, repo_path=repo).apply()
    _edit_repo(
        repo,
        GNSS_ACCURACY_LINE,
        GNSS_ACCURACY_LINE + '        Field(name="gnss_satellites", dtype=Int64),\n',
    )
    hook = FeastHook(feast_conn_id=None, repo_path=repo)
    with pytest.raises(
        FeatureStoreError, match=r"'scene_gnss_quality' reads column 'gnss_satellites', which is missing"
    ):
        hook.apply()
    fields = [f.name for f in hook.store.get_feature_view("scene_gnss_quality").features]
    assert fields == ["gnss_fix_ratio", "gnss_h_accuracy_m"]
