"""How the hook resolves backend settings, variables and secrets before Terraform runs."""

from __future__ import annotations

import json
import logging

import pytest
from nuro_ml import settings
from nuro_ml.exceptions import TerraformError
from nuro_ml.hooks.masking import mask_value, redact_text
from nuro_ml.hooks.terraform import TerraformHook

LOCAL_ENV = settings.terraform_dir() / "environments" / "local"

PG_CONFIG = """
terraform {
  backend "pg" {}
}

variable "token" {
  type      = string
  sensitive = true
}
"""


@pytest.fixture
def pg_config(tmp_path):
    directory = tmp_path / "shared-env"
    directory.mkdir()
    (directory / "main.tf").write_text(PG_CONFIG)
    return directory


def test_local_backend_state_goes_to_the_data_dir(tmp_path):
    hook = TerraformHook(working_dir=LOCAL_ENV, state_root=tmp_path)

    assert hook.environment == "local"
    assert hook.config.backend_type == "local"
    assert hook.backend_settings == {
        "path": str(tmp_path / "local" / "terraform.tfstate"),
        "workspace_dir": str(tmp_path / "local" / "workspaces"),
    }
    assert not str(hook.backend_settings["path"]).startswith(str(LOCAL_ENV))


def test_default_state_root_is_settings_data_dir():
    hook = TerraformHook(working_dir=LOCAL_ENV, environment="demo")

    assert hook.layout.root == settings.data_dir() / "terraform" / "demo"


def test_pg_conn_str_comes_from_connection_and_is_masked(pg_config, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_TF_STATE_DB",
        json.dumps(
            {
                "conn_type": "postgres",
                "host": "127.0.0.1",
                "port": 5439,
                "login": "tf",
                "password": "p@ss/w0rd-xyz",
                "schema": "state",
            }
        ),
    )
    hook = TerraformHook(working_dir=pg_config, backend_conn_id="tf_state_db")

    conn_str = hook.backend_settings["conn_str"]
    assert conn_str == "postgres://tf:p%40ss%2Fw0rd-xyz@127.0.0.1:5439/state?sslmode=disable"
    assert hook.backend_settings["schema_name"] == "terraform_shared-env".replace("-", "_")
    assert "p%40ss%2Fw0rd-xyz" not in redact_text(f"connecting with {conn_str}")


def test_pg_backend_without_conn_str_is_a_clear_error(pg_config):
    hook = TerraformHook(working_dir=pg_config)

    with pytest.raises(TerraformError, match="uses the pg backend but no conn_str"):
        _ = hook.backend_settings


def test_connection_extras_merge_under_explicit_arguments(pg_config, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_TF_TEAM",
        json.dumps(
            {
                "conn_type": "terraform",
                "extra": {
                    "backend_config": {"conn_str": "postgres://a:b@db/x", "schema_name": "from_conn"},
                    "variables": {"region": "us-west-2", "size": 1},
                    "secret_variables": {"token": "conn-secret-token-1"},
                    "env": {"AWS_SECRET_ACCESS_KEY": "aws-secret-value-2"},
                },
            }
        ),
    )
    hook = TerraformHook(
        working_dir=pg_config,
        terraform_conn_id="tf_team",
        variables={"size": 3},
        backend_config={"schema_name": "explicit"},
    )

    assert hook.variables == {"region": "us-west-2", "size": 3}
    assert hook.backend_settings == {"conn_str": "postgres://a:b@db/x", "schema_name": "explicit"}
    assert hook.secret_variables == {"token": "conn-secret-token-1"}
    assert hook.runner.env["TF_VAR_token"] == "conn-secret-token-1"
    assert hook.runner.env["AWS_SECRET_ACCESS_KEY"] == "aws-secret-value-2"
    leaked = redact_text("token=conn-secret-token-1 key=aws-secret-value-2")
    assert "conn-secret-token-1" not in leaked and "aws-secret-value-2" not in leaked
    hook.close()


def test_missing_working_dir_fails_before_running_terraform(tmp_path):
    hook = TerraformHook(working_dir=tmp_path / "nope", terraform_bin="/nonexistent/terraform")

    with pytest.raises(TerraformError, match=r"working directory .*/nope does not exist"):
        hook.plan()


def test_directory_without_configuration_is_rejected(tmp_path):
    with pytest.raises(TerraformError, match=r"contains no \.tf files"):
        TerraformHook(working_dir=tmp_path).init()


def test_undeclared_secret_variable_is_rejected(pg_config):
    hook = TerraformHook(
        working_dir=pg_config,
        secret_variables={"tokn": "value-123456"},
        backend_config={"conn_str": "postgres://x"},
    )

    with pytest.raises(TerraformError, match=r"secret variable\(s\) tokn are not declared .*declared: token"):
        hook.init()


def test_streamed_lines_are_redacted(caplog):
    mask_value({"password": "first-secret-aaa", "nested": ["second-secret-bbb", 123456789]})
    hook = TerraformHook(working_dir=LOCAL_ENV)
    caplog.set_level(logging.INFO, logger="nuro_ml.terraform")

    hook._emit(logging.INFO, "null_resource.x (local-exec): first-secret-aaa second-secret-bbb 123456789")

    assert "first-secret-aaa" not in caplog.text and "second-secret-bbb" not in caplog.text
    assert "123456789" not in caplog.text
    assert "null_resource.x (local-exec): *** *** ***" in caplog.text


def test_invalid_workspace_name_is_rejected():
    with pytest.raises(TerraformError, match="invalid Terraform workspace name"):
        TerraformHook(working_dir=LOCAL_ENV, workspace="team a")
