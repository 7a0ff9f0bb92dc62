"""Terraform command lines and environment built from typed arguments."""

from __future__ import annotations

from pathlib import Path

import pytest
from nuro_ml.exceptions import TerraformError
from nuro_ml.terraform_support import commands


def test_variables_are_encoded_as_terraform_parses_them():
    args = commands.var_args(
        {
            "num_gpus": 2,
            "python": "/venv/bin/python",
            "tags": {"team": "av"},
            "zones": ["a", "b"],
            "spot": True,
            "nothing": None,
        }
    )

    assert args == [
        "-var",
        "nothing=null",
        "-var",
        "num_gpus=2",
        "-var",
        "python=/venv/bin/python",
        "-var",
        "spot=true",
        "-var",
        'tags={"team": "av"}',
        "-var",
        'zones=["a", "b"]',
    ]


@pytest.mark.parametrize("name", ["1abc", "a b", "x=y", ""])
def test_invalid_variable_names_are_rejected(name):
    with pytest.raises(TerraformError, match="invalid Terraform variable name"):
        commands.var_args({name: 1})


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("90s", "-lock-timeout=90s"),
        ("5m", "-lock-timeout=5m"),
        (30, "-lock-timeout=30s"),
        (0, "-lock-timeout=0s"),
    ],
)
def test_lock_timeout(given, expected):
    assert commands.lock_timeout_arg(given) == expected


def test_bad_lock_timeout_is_rejected():
    with pytest.raises(TerraformError, match="invalid lock timeout"):
        commands.lock_timeout_arg("soon")


def test_plan_is_non_interactive_json_and_saved():
    args = commands.plan_args(
        out=Path("/p/x.tfplan"), variables={"a": 1}, lock_timeout="1m", detailed_exitcode=True
    )

    assert args == [
        "plan",
        "-input=false",
        "-json",
        "-lock-timeout=1m",
        "-out=/p/x.tfplan",
        "-detailed-exitcode",
        "-var",
        "a=1",
    ]
    assert "-destroy" in commands.plan_args(out=Path("p"), variables={}, lock_timeout=0, destroy=True)


def test_apply_of_saved_plan_takes_no_variables():
    assert commands.apply_args(lock_timeout="10s", plan_file=Path("/p/x.tfplan")) == [
        "apply",
        "-input=false",
        "-json",
        "-lock-timeout=10s",
        "/p/x.tfplan",
    ]
    with pytest.raises(TerraformError, match="fixed at plan time"):
        commands.apply_args(lock_timeout="10s", plan_file=Path("x"), variables={"a": 1})
    assert commands.apply_args(lock_timeout="10s", variables={"a": 1})[-3:] == [
        "-auto-approve",
        "-var",
        "a=1",
    ]


def test_destroy_is_auto_approved():
    assert commands.destroy_args(variables={}, lock_timeout="5s") == [
        "destroy",
        "-input=false",
        "-json",
        "-auto-approve",
        "-lock-timeout=5s",
    ]


def test_init_uses_mirror_backend_file_and_readonly_lockfile():
    args = commands.init_args(
        plugin_dirs=[Path("/m")], backend_config_file=Path("/d/backend.tfbackend"), lockfile_readonly=True
    )

    assert args == [
        "init",
        "-input=false",
        "-no-color",
        "-reconfigure",
        "-plugin-dir=/m",
        "-backend-config=/d/backend.tfbackend",
        "-lockfile=readonly",
    ]


def test_backend_config_file_quotes_and_escapes_templates():
    text = commands.backend_config_text({"conn_str": 'postgres://u:p${x}%{y}"@h/db', "skip": True, "port": 5})

    assert text.splitlines() == [
        'conn_str = "postgres://u:p$${x}%%{y}\\"@h/db"',
        "port = 5",
        "skip = true",
    ]


def test_backend_config_rejects_nested_values():
    with pytest.raises(TerraformError, match="backend setting 'x'"):
        commands.backend_config_text({"x": {"a": 1}})


def test_environment_is_isolated_and_carries_secrets(tmp_path):
    env = commands.terraform_env(
        data_dir=tmp_path,
        secret_variables={"token": "s3cret", "limits": {"gpu": 4}},
        extra_env={"AWS_REGION": "us-west-2"},
        base_env={"PATH": "/bin", "TF_WORKSPACE": "prod"},
    )

    assert env["TF_DATA_DIR"] == str(tmp_path)
    assert env["TF_IN_AUTOMATION"] == "1" and env["TF_INPUT"] == "0" and env["CHECKPOINT_DISABLE"] == "1"
    assert env["TF_VAR_token"] == "s3cret"
    assert env["TF_VAR_limits"] == '{"gpu": 4}'
    assert env["AWS_REGION"] == "us-west-2" and env["PATH"] == "/bin"
    assert "TF_WORKSPACE" not in env
