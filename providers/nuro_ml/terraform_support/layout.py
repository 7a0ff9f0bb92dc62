"""Where Terraform state, saved plans and scratch data live, outside the source tree.

Under ``settings.data_dir()/terraform/<environment>/``:

- ``terraform.tfstate`` (local backend, ``default`` workspace) and ``workspaces/<name>/terraform.tfstate``;
- ``plans/<workspace>/<dag_id>/<run_id>/<task_id>[.<map_index>].tfplan``: one saved plan per task
  instance, so a retried task overwrites its own plan and never another run's.

Each Terraform process gets its own ``TF_DATA_DIR`` in a fresh temporary directory (removed at the end
of the task), so parallel tasks never share ``.terraform``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from nuro_ml import settings

_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]+")


def safe_component(value: str) -> str:
    """A path component from an arbitrary id (run ids contain ``:`` and ``+``)."""
    cleaned = _UNSAFE.sub("_", value).strip("._")
    return cleaned or "_"


@dataclass(frozen=True)
class RunKey:
    """The task instance a Terraform run belongs to: (dag_id, run_id, task_id, map_index)."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1

    def parts(self) -> list[str]:
        leaf = self.task_id if self.map_index < 0 else f"{self.task_id}.{self.map_index}"
        return [safe_component(self.dag_id), safe_component(self.run_id), safe_component(leaf)]


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

    def plan_file(self, workspace: str, key: RunKey, *, suffix: str = ".tfplan") -> Path:
        *dirs, leaf = key.parts()
        return self.root.joinpath("plans", safe_component(workspace), *dirs, leaf + suffix)
