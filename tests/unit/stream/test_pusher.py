"""The online query's pusher: refuses a repository without the stream's push source; latest per vehicle."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from nuro_ml.exceptions import FeatureStoreError
from nuro_ml.stream.job import FeastPusher, ProgressRecorder, StreamJobConfig, latest_per_vehicle


def test_a_repository_without_the_push_source_fails_at_start(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "feature_store.yaml").write_text(
        "project: empty\nprovider: local\nregistry: registry.db\n"
        "online_store:\n  type: sqlite\n  path: online.db\nentity_key_serialization_version: 3\n"
    )
    cfg = StreamJobConfig(
        output_path=str(tmp_path / "out"),
        checkpoint_path=str(tmp_path / "ckpt"),
        state_dir=str(tmp_path / "state"),
        landing_path=str(tmp_path / "landing"),
        feature_repo=str(repo),
    )
    with pytest.raises(FeatureStoreError, match="has no feature view fed by push source 'vehicle_live_push'"):
        FeastPusher(cfg, ProgressRecorder(cfg, pid=0))


def test_latest_per_vehicle_takes_the_newest_event() -> None:
    t = pd.Timestamp("2026-12-05T12:00:00Z")
    frame = pd.DataFrame(
        {
            "vehicle_id": ["a", "b", "a", "b"],
            "event_timestamp": [t, t + pd.Timedelta(seconds=5), t + pd.Timedelta(seconds=9), t],
            "speed_mps": [1.0, 2.0, 3.0, 4.0],
        }
    )
    latest = latest_per_vehicle(frame).set_index("vehicle_id")["speed_mps"].to_dict()
    assert latest == {"a": 3.0, "b": 2.0}
