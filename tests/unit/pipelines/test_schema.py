"""The published JSON Schema is current and agrees with the pydantic models."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml
from nuro_ml.pipelines import schema
from nuro_ml.settings import REPO_ROOT

EXAMPLES = sorted((REPO_ROOT / "dags" / "pipelines").glob("*.yaml"))


def test_checked_in_schema_is_up_to_date():
    assert schema.SCHEMA_PATH.read_text() == schema.render(), (
        "schemas/pipeline.schema.json is stale: run python -m nuro_ml.pipelines.schema"
    )


def test_check_mode_fails_on_a_stale_copy(tmp_path, capsys):
    stale = tmp_path / "pipeline.schema.json"
    stale.write_text("{}\n")

    assert schema.main([str(stale), "--check"]) == 1
    assert schema.main([str(stale)]) == 0
    assert schema.main([str(stale), "--check"]) == 0
    assert json.loads(stale.read_text())["title"] == "nuro-ml pipeline spec"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.name)
def test_repository_examples_satisfy_the_schema(example):
    validator = jsonschema.Draft202012Validator(json.loads(schema.SCHEMA_PATH.read_text()))
    data = yaml.safe_load(example.read_text())
    # JSON has no date type: YAML dates travel as ISO strings, as an editor sees them.
    data["start_date"] = data["start_date"].isoformat()

    assert list(validator.iter_errors(data)) == []


def test_schema_rejects_unknown_fields_like_the_models_do():
    validator = jsonschema.Draft202012Validator(json.loads(schema.SCHEMA_PATH.read_text()))
    spec = {"dag_id": "x", "start_date": "2026-11-01", "stages": {"a": {"operator": "empty", "argz": {}}}}

    [error] = list(validator.iter_errors(spec))

    assert list(error.absolute_path) == ["stages", "a"]
    assert "argz" in error.message
