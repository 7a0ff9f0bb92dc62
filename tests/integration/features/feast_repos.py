"""Repositories made by the real ``feast init``, and stock Feast run on them for comparison."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

FEAST = str(Path(sys.executable).with_name("feast"))


def feast_init(where: Path, name: str, template: str, answers: Sequence[str] = ()) -> Path:
    """``feast init NAME -t TEMPLATE`` in ``where``; returns its ``feature_repo`` directory.

    ``answers`` feed the template's prompts (the postgres template asks for its server).
    """
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [FEAST, "init", name, "-t", template],
        cwd=where,
        input="".join(f"{a}\n" for a in answers),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, f"feast init -t {template} failed:\n{done.stdout}\n{done.stderr}"
    repo = where / name / "feature_repo"
    assert (repo / "feature_store.yaml").is_file()
    return repo


def copy_project(repo: Path, dst: Path) -> Path:
    """A second copy of an initialised repository (same data), for stock Feast."""
    shutil.copytree(repo.parent, dst, ignore=shutil.ignore_patterns("__pycache__"))
    return dst / repo.name


@contextlib.contextmanager
def _isolated_import(repo: Path) -> Iterator[None]:
    """Feast's ``parse_repo`` imports repo files by module name and chdirs into the repo."""
    names = {p.stem for p in repo.glob("*.py")}
    cwd = os.getcwd()
    for name in names:
        sys.modules.pop(name, None)
    sys.path.insert(0, str(repo))  # what the feast CLI does for the repository it runs in
    try:
        yield
    finally:
        os.chdir(cwd)
        for name in names:
            sys.modules.pop(name, None)
        with contextlib.suppress(ValueError):
            sys.path.remove(str(repo))


def stock_online_features(
    repo: Path, start: datetime, end: datetime, entity_rows: list[dict[str, Any]]
) -> dict[str, list[Any]]:
    """``feast apply``, ``feast materialize START END``, then the online read, in this process.

    On-demand views unpickle their functions from the repository's modules, so the read
    happens with the repository importable, as in a process started in it.
    """
    from feast import FeatureStore
    from feast.repo_config import load_repo_config
    from feast.repo_operations import apply_total

    with _isolated_import(repo):
        config = load_repo_config(repo, repo / "feature_store.yaml")
        apply_total(config, repo, skip_source_validation=False)
        store = FeatureStore(repo_path=str(repo))
        store.materialize(start_date=start, end_date=end)
        return online_features(store, entity_rows)


def online_features(store: Any, entity_rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Every feature of every feature view and on-demand view, read with Feast's online read."""
    refs: list[str] = []
    for view in sorted(store.list_feature_views(), key=lambda v: v.name):
        if view.online:
            refs += [f"{view.name}:{f.name}" for f in view.features]
    for odfv in sorted(store.list_on_demand_feature_views(), key=lambda v: v.name):
        refs += [f"{odfv.name}:{f.name}" for f in odfv.features]
    response = store.get_online_features(features=refs, entity_rows=entity_rows, full_feature_names=True)
    return dict(response.to_dict())
