"""What ``up`` started, in ``.cluster/state.json``: PIDs, ports, URLs, passwords (mode 0600)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from nuro_ml.settings import REPO_ROOT

STATE_FILE = "state.json"


def cluster_dir() -> Path:
    """``NURO_ML_CLUSTER_DIR``, default ``.cluster/`` in the checkout (git-ignored)."""
    return Path(os.environ.get("NURO_ML_CLUSTER_DIR", REPO_ROOT / ".cluster")).resolve()


def state_path(root: Path | None = None) -> Path:
    return (root or cluster_dir()) / STATE_FILE


def load(root: Path | None = None) -> dict[str, Any] | None:
    path = state_path(root)
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return None


def save(state: dict[str, Any], root: Path | None = None) -> Path:
    """Write atomically; the file holds passwords, so only its owner may read it."""
    path = state_path(root)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(state, out, indent=2, sort_keys=True)
    tmp.replace(path)
    return path


def remove(root: Path | None = None) -> None:
    state_path(root).unlink(missing_ok=True)
