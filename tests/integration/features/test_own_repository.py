"""The platform's own repository through the operators, against stock Feast on the same data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from nuro_ml.operators.feast import FeastApplyOperator, FeastMaterializeOperator

from tests.integration.features.feast_repos import online_features, stock_online_features
from tests.unit.features.scene_data import (
    DAY0,
    copy_repo,
    days,
    read_source,
    utc,
    write_days,
    write_live_state,
)

pytestmark = pytest.mark.integration


def scene_rows() -> list[dict[str, Any]]:
    rows = read_source().select(["scene_id", "vehicle_id"]).to_pylist()
    return sorted(rows, key=lambda r: r["scene_id"])[::3]


def run_ours(repo: Path, start: Any, end: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    FeastApplyOperator(task_id="apply", feast_conn_id="", repo_path=str(repo)).execute({})  # type: ignore[arg-type]
    op = FeastMaterializeOperator(
        task_id="materialize",
        feast_conn_id="",
        repo_path=str(repo),
        start=start.isoformat(),
        end=end.isoformat(),
    )
    xcom = op.execute({})  # type: ignore[arg-type]
    op.hook.store.refresh_registry()
    xcom["_online"] = online_features(op.hook.store, rows)
    return xcom


def test_own_repository_online_values_equal_stock_feasts(data_dir: Path, tmp_path: Path) -> None:
    write_days(2, scenes=4)
    write_live_state(2)  # the stream's view is in the repository too
    start, end = utc(DAY0, 6), utc(days(3)[-1])
    rows = scene_rows()
    ours = run_ours(copy_repo(tmp_path / "ours"), start, end, rows)
    stock_repo = copy_repo(tmp_path / "stock")
    yaml = stock_repo / "feature_store.yaml"
    yaml.write_text(
        yaml.read_text().replace("${NURO_ML_DATA_DIR}/feast/", "${NURO_ML_DATA_DIR}/stock_feast/")
    )

    stock = stock_online_features(
        stock_repo, start - FeastMaterializeOperator(task_id="x").lookback, end, rows
    )

    assert {p["path"] for p in ours["paths"].values()} == {"partitioned"}
    assert ours["online_store"].startswith(f"sqlite://{data_dir / 'feast' / 'online_store.db'}")
    assert ours["_online"].keys() == stock.keys()
    for name, values in stock.items():
        assert ours["_online"][name] == values, name
    assert any(v is not None for v in stock["scene_ego_motion__speed_mean_mps"])
    assert any(v is not None for v in stock["vehicle_live_state__speed_mps"])
