"""The training workload reads its features from Feast by default (the contract with the features area)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from nuro_ml import settings
from nuro_ml.features.synthetic import write_scene_stats
from nuro_ml.hooks.feast import FeastHook

from tests.unit.ray.training_data import FEATURES
from workloads.train_xgboost import load_frame, parse_args, validate_frame

pytestmark = pytest.mark.integration


def test_feast_is_the_default_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point-in-time features through load_training_frame, from a local Feast store."""
    monkeypatch.setenv("NURO_ML_DATA_DIR", str(tmp_path / "data"))
    for name in ("ONLINE_STORE", "REDIS_CONNECTION_STRING", "REGISTRY_URL", "CACHE_URL"):
        monkeypatch.delenv(f"NURO_ML_FEAST_{name}", raising=False)
    write_scene_stats(
        settings.etl_output_dir() / "scene_stats",
        days=[date(2026, 3, 1), date(2026, 3, 2)],
        vehicles=["veh01", "veh02"],
        scenes_per_drive=5,
    )
    hook = FeastHook(feast_conn_id=None)
    try:
        hook.apply()
        args = parse_args(["--start", "2026-03-01", "--end", "2026-03-02", "--vehicles", "veh02"])
        frame, source = load_frame(args)
    finally:
        hook.close()

    assert source == "feature service 'scene_training' [2026-03-01T00:00:00+00:00, 2026-03-02T00:00:00+00:00)"
    assert set(frame["vehicle_id"]) == {"veh02"} and len(frame) > 0
    assert frame["event_timestamp"].min().date() == date(2026, 3, 1)
    features = validate_frame(frame, source, min_rows=2)
    assert features == [*FEATURES, "camera_frames"]
