"""The training workload's pure parts: data checks, hold-out split, result line, CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from nuro_ml.operators.ray import parse_result_line

from tests.unit.ray.training_data import FEATURES, make_training_frame
from workloads.train_xgboost import (
    LABEL,
    TrainingDataError,
    feature_columns,
    main,
    parse_args,
    result_line,
    round_progress,
    split_holdout,
    validate_frame,
)


def test_features_exclude_ids_timestamps_label_and_the_label_source() -> None:
    frame = make_training_frame(20)
    frame["brake_pressure_max"] = 1.0
    frame["drive_id"] = "d"
    assert feature_columns(frame) == FEATURES


def test_split_is_stratified_reproducible_and_independent_of_row_order() -> None:
    frame = make_training_frame(200)
    train, test = split_holdout(frame, test_fraction=0.25, seed=7)
    assert len(train) + len(test) == 200
    assert set(train["scene_id"]).isdisjoint(test["scene_id"])
    for label in (0, 1):
        share = (test[LABEL] == label).sum() / (frame[LABEL] == label).sum()
        assert share == pytest.approx(0.25, abs=0.02)
    shuffled = frame.sample(frac=1.0, random_state=1)
    _, test_again = split_holdout(shuffled, test_fraction=0.25, seed=7)
    assert sorted(test_again["scene_id"]) == sorted(test["scene_id"])
    _, other_seed = split_holdout(frame, test_fraction=0.25, seed=8)
    assert sorted(other_seed["scene_id"]) != sorted(test["scene_id"])


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f.drop(columns=[LABEL]), "label column 'hard_brake' missing"),
        (lambda f: f.assign(hard_brake=f[LABEL] * 2), r"must be 0/1, found \[2\]"),
        (lambda f: f.assign(hard_brake=f[LABEL].astype("float").where(f.index > 0)), "1 null value"),
        (lambda f: f[["scene_id", "vehicle_id", LABEL]], "no numeric feature columns"),
        (lambda f: f.head(3), "3 row"),
    ],
)
def test_unusable_frames_are_rejected_with_the_source_named(mutate, message: str) -> None:
    frame = mutate(make_training_frame(40))
    with pytest.raises(TrainingDataError, match=message) as err:
        validate_frame(frame, "scenes.parquet", min_rows=6)
    assert str(err.value).startswith("scenes.parquet: ")


def test_result_line_is_one_strict_json_line_the_operator_parses() -> None:
    result = {
        "metrics": {"auc": 0.9, "logloss": 0.2},
        "artifact_uri": "file:///a/model.ubj",
        "features": ["x"],
    }
    line = result_line(result)
    assert "\n" not in line and line.startswith("NURO_ML_RESULT {")
    assert parse_result_line(f"noise\n{line}\n") == result
    with pytest.raises(ValueError):
        result_line({"metrics": {"auc": float("nan")}})


def test_cli_needs_a_data_source() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--output-dir", "/tmp/x"])
    args = parse_args(["--start", "2026-11-24", "--end", "2026-11-25", "--vehicles", "veh-001,veh-002"])
    assert args.start.isoformat() == "2026-11-24T00:00:00+00:00"
    assert args.learning_rate == 0.3 and args.num_workers == 2 and args.gpus_per_worker == 1.0


def test_bad_training_data_fails_before_touching_earlier_outputs(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text('{"metrics": {"auc": 0.8}}')
    data = tmp_path / "scenes.parquet"
    make_training_frame(50).drop(columns=[LABEL]).to_parquet(data)
    code = main(["--training-data", str(data), "--output-dir", str(out)])
    assert code == 2
    assert f"{data}: label column 'hard_brake' missing" in capsys.readouterr().err
    assert json.loads((out / "metrics.json").read_text()) == {"metrics": {"auc": 0.8}}
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json"]


def test_missing_training_file_is_named(tmp_path: Path, capsys) -> None:
    assert main(["--training-data", str(tmp_path / "nope.parquet"), "--output-dir", str(tmp_path)]) == 2
    assert "nope.parquet: no such file or directory" in capsys.readouterr().err


def test_boosting_rounds_print_progress_with_rate_eta_and_latest_metrics(capsys) -> None:
    import xgboost as xgb

    frame = make_training_frame(300)
    train, test = split_holdout(frame, test_fraction=0.25, seed=1)
    dtrain = xgb.DMatrix(train[FEATURES].astype("float64"), label=train[LABEL].to_numpy())
    dvalid = xgb.DMatrix(test[FEATURES].astype("float64"), label=test[LABEL].to_numpy())
    params = {"objective": "binary:logistic", "eval_metric": ["logloss", "auc"], "nthread": 1, "max_depth": 2}
    evals = [(dtrain, "train"), (dvalid, "valid")]
    first = xgb.train(params, dtrain, num_boost_round=2, evals=evals, verbose_eval=False)
    capsys.readouterr()

    # Resumed after 2 of 6 rounds, as a restarted Ray Train worker does from its checkpoint.
    xgb.train(
        params,
        dtrain,
        num_boost_round=4,
        evals=evals,
        xgb_model=first,
        verbose_eval=False,
        callbacks=[round_progress(6, done=2, every_s=0.0)],
    )
    lines = capsys.readouterr().out.splitlines()
    metric = r"train-logloss 0\.\d{4}, train-auc 0\.\d{4}, valid-logloss 0\.\d{4}, valid-auc 0\.\d{4}"
    for n, line in zip((3, 4, 5), lines, strict=False):
        share = round(100 * n / 6)
        assert re.fullmatch(
            rf"Boosting rounds: {n}/6 rounds \({share}%\), [\d.,]+ rounds/\w+, ETA [\d.hms]+, {metric}", line
        ), line
    assert re.fullmatch(rf"Boosting rounds: 6/6 rounds \(100%\), [\d.,]+ rounds/\w+, {metric}", lines[3])
    assert re.fullmatch(
        rf"Boosting rounds: 6/6 rounds \(100%\) in [\d.hms]+, [\d.,]+ rounds/\w+, {metric}", lines[4]
    )
    assert len(lines) == 5
