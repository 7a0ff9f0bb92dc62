"""OpenLineage datasets and facets built from operator results: names, schemas, counts, secrets."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from nuro_ml.lineage import naming
from nuro_ml.lineage.etl import etl_lineage
from nuro_ml.lineage.terraform import terraform_lineage, terraform_operator_lineage
from nuro_ml.lineage.training import ray_job_lineage, training_lineage
from openlineage.client.serde import Serde


def _event_json(lineage) -> dict:
    return {
        "inputs": [json.loads(Serde.to_json(d)) for d in lineage.inputs],
        "outputs": [json.loads(Serde.to_json(d)) for d in lineage.outputs],
        "run": {k: json.loads(Serde.to_json(v)) for k, v in lineage.run_facets.items()},
    }


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/data/etl/", naming.DatasetId("file", "/data/etl")),
        ("/data/x/../etl", naming.DatasetId("file", "/data/etl")),
        ("file:///data/model.ubj", naming.DatasetId("file", "/data/model.ubj")),
        ("s3://bucket/etl/scene_stats/", naming.DatasetId("s3://bucket", "etl/scene_stats")),
    ],
)
def test_path_datasets_follow_the_openlineage_naming(path: str, expected: naming.DatasetId) -> None:
    assert naming.path_dataset(path) == expected


def test_one_feature_view_has_one_identity_for_writer_and_reader() -> None:
    assert naming.feature_view_dataset("nuro_ml", "scene_ego_motion") == naming.DatasetId(
        "feast://nuro_ml", "scene_ego_motion"
    )
    assert naming.online_store_dataset(
        "redis://127.0.0.1:6379/0/nuro_ml", "nuro_ml", "v"
    ) == naming.DatasetId("redis://127.0.0.1:6379/0", "nuro_ml.v")
    assert naming.table_dataset("s3://b/etl", "imu") == naming.DatasetId("s3://b", "etl/imu")


def _write_partition(root: Path, table: str, day: str, vehicle: str, rows: int) -> None:
    folder = root / table / f"date={day}" / f"vehicle={vehicle}"
    folder.mkdir(parents=True)
    pq.write_table(
        pa.table({"timestamp_ns": pa.array(range(rows), pa.int64()), "speed": [1.5] * rows}),
        folder / "p.parquet",
    )


def test_etl_lineage_names_logs_and_tables_with_schema_and_row_counts(tmp_path: Path) -> None:
    out = tmp_path / "etl"
    _write_partition(out, "ego_pose", "2026-11-24", "veh-001", 7)
    _write_partition(out, "scene_stats", "2026-11-24", "veh-001", 2)
    result = {
        "files": 3,
        "bytes": 1234,
        "messages": {"/ego/pose": 7, "/imu": 5},
        "rows": {"ego_pose": 7, "scene_stats": 2},
        "partitions": ["date=2026-11-24/vehicle=veh-001", "date=2026-11-24/vehicle=veh-002"],
        "up_to_date": ["date=2026-11-24/vehicle=veh-002"],
        "quarantined": [],
    }
    event = _event_json(etl_lineage(input_path=str(tmp_path / "raw"), output_path=str(out), result=result))

    [logs] = event["inputs"]
    assert (logs["namespace"], logs["name"]) == ("file", str(tmp_path / "raw"))
    assert logs["inputFacets"]["inputStatistics"]["rowCount"] == 12
    assert logs["inputFacets"]["inputStatistics"]["fileCount"] == 3
    tables = {o["name"]: o for o in event["outputs"]}
    assert set(tables) == {str(out / "ego_pose"), str(out / "scene_stats")}
    pose = tables[str(out / "ego_pose")]
    assert pose["outputFacets"]["outputStatistics"]["rowCount"] == 7
    columns = {f["name"]: f["type"] for f in pose["facets"]["schema"]["fields"]}
    assert columns["timestamp_ns"] == "int64" and {"date", "vehicle", "speed"} <= set(columns)
    assert pose["facets"]["nuro_ml_partitions"]["written"] == ["date=2026-11-24/vehicle=veh-001"]
    assert pose["facets"]["lifecycleStateChange"]["lifecycleStateChange"] == "OVERWRITE"


def test_etl_lineage_of_an_up_to_date_interval_changes_no_table(tmp_path: Path) -> None:
    lineage = etl_lineage(input_path=str(tmp_path), output_path=str(tmp_path), result={"rows": {}})
    assert lineage.outputs == []
    assert len(lineage.inputs) == 1


def test_terraform_apply_lineage_names_outputs_but_never_their_values() -> None:
    lineage = terraform_lineage(
        working_dir="/repo/terraform/environments/local",
        workspace="default",
        operation="apply",
        result={"ray_address": "10.0.0.7:6379", "db_password_hint": "hunter2"},
    )
    event = _event_json(lineage)
    [workspace] = event["outputs"]
    assert (workspace["namespace"], workspace["name"]) == (
        "terraform",
        "/repo/terraform/environments/local#default",
    )
    assert workspace["facets"]["nuro_ml_terraform"]["outputs"] == ["db_password_hint", "ray_address"]
    assert "hunter2" not in json.dumps(event) and "10.0.0.7" not in json.dumps(event)


def test_terraform_operators_map_to_read_or_change_of_the_workspace() -> None:
    from nuro_ml.operators.terraform import TerraformDestroyOperator, TerraformPlanOperator

    plan = TerraformPlanOperator(task_id="plan", working_dir="/m")
    plan._lineage_result = {"plan_file": "/tmp/p"}
    read = terraform_operator_lineage(plan)
    assert [d.name for d in read.inputs] == ["/m#default"] and read.outputs == []
    destroy = TerraformDestroyOperator(task_id="destroy", working_dir="/m", workspace="ws")
    # What the operator keeps of its result: the forked lineage process cannot read XCom.
    destroy._lineage_result = {"destroyed": ["a", "b"], "count": 2}
    dropped = _event_json(terraform_operator_lineage(destroy))
    [out] = dropped["outputs"]
    assert out["facets"]["lifecycleStateChange"]["lifecycleStateChange"] == "DROP"
    assert out["facets"]["nuro_ml_terraform"]["destroyed"] == 2


def test_unknown_terraform_operation_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown Terraform operation 'refresh'"):
        terraform_lineage(working_dir="/m", workspace="default", operation="refresh", result=None)


def test_training_lineage_from_the_reported_data_and_model(tmp_path: Path) -> None:
    model = tmp_path / "model.ubj"
    model.write_bytes(b"x" * 42)
    data = tmp_path / "train.parquet"
    result = {
        "training_data": str(data),
        "artifact_uri": model.as_uri(),
        "metrics": {"rows_used": 120},
        "submission_id": "raysubmit-abc",
    }
    operator = SimpleNamespace(
        inlets=[],
        outlets=[SimpleNamespace(uri="s3://models/registry/v3")],
        _lineage_result=result,
        _job_id="raysubmit-abc",
    )
    event = _event_json(ray_job_lineage(operator))
    [data_in] = event["inputs"]
    assert data_in["name"] == str(data) and data_in["inputFacets"]["inputStatistics"]["rowCount"] == 120
    outputs = {(o["namespace"], o["name"]): o for o in event["outputs"]}
    assert set(outputs) == {("s3://models", "registry/v3"), ("file", str(model))}
    assert outputs[("file", str(model))]["outputFacets"]["outputStatistics"]["size"] == 42
    assert event["run"]["externalQuery"] == {
        **event["run"]["externalQuery"],
        "externalQueryId": "raysubmit-abc",
        "source": "ray",
    }


def test_training_lineage_of_an_opaque_job_is_its_declared_assets() -> None:
    lineage = training_lineage(
        result="4711",
        engine="slurm",
        job_id="4711",
        inlets=[SimpleNamespace(uri="file:///data/etl/scene_stats")],
        outlets=[],
    )
    assert [(d.namespace, d.name) for d in lineage.inputs] == [("file", "/data/etl/scene_stats")]
    assert lineage.outputs == []
    assert lineage.run_facets["externalQuery"].externalQueryId == "4711"


def test_an_operator_that_kept_no_result_still_names_its_static_datasets(tmp_path: Path) -> None:
    from nuro_ml.operators.spark import MCAPToParquetOperator

    etl = MCAPToParquetOperator(task_id="etl", start="a", end="b", input_path=str(tmp_path / "raw"))
    lineage = etl.get_openlineage_facets_on_complete(None)
    assert [(d.namespace, d.name) for d in lineage.inputs] == [("file", str(tmp_path / "raw"))]
    assert lineage.outputs == []
