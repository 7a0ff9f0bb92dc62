"""Where Terraform state, saved plans and scratch data live, outside the source tree.

Under ``settings.data_dir()/terraform/<environment>/``:

- ``terraform.tfstate`` (local backend, ``default`` workspace) and ``workspaces/<name>/terraform.tfstate``;
- ``plans/<workspace>/<dag_id>/<run_id>/<task_id>[.<map_index>].tfplan``: one saved plan per task
  instance, so a retried task overwrites its own plan and never another run's.

Each Terraform process gets its own ``TF_DATA_DIR`` in a fresh temporary directory (removed at the end
of the task), so parallel tasks never share ``.terraform``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nuro_ml import settings
from nuro_ml.task_key import PATH_COMPONENT, TaskKey, slug


def safe_component(value: str) -> str:
    """A path component from an arbitrary id (run ids contain ``:`` and ``+``)."""
    return slug(value, PATH_COMPONENT)


def plan_parts(key: TaskKey) -> list[str]:
    """``<dag_id>/<run_id>/<task_id>[.<map_index>]``: where a task instance's plan is saved."""
    leaf = f"{key.task_id}.{key.map_index}" if key.mapped else key.task_id
    return [safe_component(key.dag_id), safe_component(key.run_id), safe_component(leaf)]


@dataclass(frozen=True)
class EnvironmentLayout:
    """Paths for one Terraform environment (a configuration directory plus its state)."""

    root: Path

    @classmethod
    def for_environment(cls, environment: str, base: Path | None = None) -> EnvironmentLayout:
        return cls(root=(base or settings.data_dir() / "terraform") / safe_component(environment))

    @property
    def state_file(self) -> Path:
        return self.root / "terraform.tfstate"

    @property
    def workspace_dir(self) -> Path:
        return self.root / "workspaces"

    def state_file_for(self, workspace: str) -> Path:
        if workspace == "default":
            return self.state_file
        return self.workspace_dir / workspace / "terraform.tfstate"

    def plan_file(self, workspace: str, key: TaskKey, *, suffix: str = ".tfplan") -> Path:
        *dirs, leaf = plan_parts(key)
        return self.root.joinpath("plans", safe_component(workspace), *dirs, leaf + suffix)
