"""Helpers for Terraform integration tests: tiny null-provider configurations and task contexts."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from nuro_ml import settings

NULL_PROVIDER_BLOCK = """
terraform {
  required_providers {
    null = {
      source  = "hashicorp/null"
      version = "2.1.2"
    }
  }
  backend "%s" {}
}
"""

_run_ids = itertools.count()


def write_config(directory: Path, body: str, *, backend: str = "local") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "versions.tf").write_text(NULL_PROVIDER_BLOCK % backend)
    (directory / "main.tf").write_text(body)
    return directory


def state_of(environment: str, workspace: str = "default") -> dict[str, Any] | None:
    """The local-backend state document of an environment, or None when none was written."""
    root = settings.data_dir() / "terraform" / environment
    path = root / "terraform.tfstate"
    if workspace != "default":
        path = root / "workspaces" / workspace / "terraform.tfstate"
    if not path.exists() or not path.read_text().strip():
        return None
    return json.loads(path.read_text())


@dataclass
class TaskInstanceStub:
    """The identity and XCom of a task instance, as operators read them from the context."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1
    pushed: dict[str, Any] = field(default_factory=dict)

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def context_for(task_id: str, *, dag_id: str = "terraform_it", run_id: str | None = None) -> dict[str, Any]:
    run = run_id or f"manual__it_{next(_run_ids)}"
    return {"ti": TaskInstanceStub(dag_id=dag_id, run_id=run, task_id=task_id)}


@pytest.fixture
def tf_config(tmp_path):
    """Write a null-provider configuration into a fresh directory and return that directory."""

    def make(body: str, *, name: str | None = None, backend: str = "local") -> Path:
        # The directory name is the environment name, which keys the state: unique per test.
        return write_config(tmp_path / (name or tmp_path.name), body, backend=backend)

    return make
