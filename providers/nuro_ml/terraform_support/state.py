"""Identity (lineage and serial) of Terraform states, to tell whether a saved plan is stale.

Terraform 1.0 refuses a saved plan whose prior state has a different lineage or serial than the current
state, but only when the plan's prior state had a lineage: a plan made before the workspace had any
state applies silently over a state created since, orphaning what that state tracked. The hook closes
that gap by comparing the prior state recorded in the plan file with the current one itself.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class StateVersion:
    """Which version of which state: Terraform bumps ``serial`` on every write of one ``lineage``."""

    lineage: str
    serial: int

    @property
    def exists(self) -> bool:
        return bool(self.lineage)

    def describe(self) -> str:
        return f"serial {self.serial} of lineage {self.lineage}" if self.exists else "no state"

    @classmethod
    def from_document(cls, document: dict[str, Any] | None) -> StateVersion:
        if not document:
            return cls(lineage="", serial=0)
        return cls(lineage=str(document.get("lineage") or ""), serial=int(document.get("serial") or 0))

    @classmethod
    def from_json_text(cls, text: str) -> StateVersion:
        return cls.from_document(json.loads(text) if text.strip() else None)


def plan_prior_state(plan_file: Path) -> StateVersion | None:
    """The state a saved plan was made against, or None when the plan file cannot be read that way."""
    try:
        with zipfile.ZipFile(plan_file) as archive:
            return StateVersion.from_json_text(archive.read("tfstate").decode("utf-8"))
    except (zipfile.BadZipFile, KeyError, OSError, ValueError):
        return None


def stale_reason(prior: StateVersion, current: StateVersion) -> str | None:
    """Why a plan made against ``prior`` must not be applied to ``current`` (None: it may)."""
    if prior == current:
        return None
    if not prior.exists and not current.exists:
        return None
    return f"it was made against {prior.describe()}, but the state is now {current.describe()}"
