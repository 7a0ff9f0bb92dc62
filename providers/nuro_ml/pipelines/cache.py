"""On-disk cache of checked specs, so a DAG processor re-parsing unchanged files skips the checks.

Airflow parses a DAG file in a fresh process each time, so an in-memory cache never helps
the DAG processor. Each spec that passed every check is stored under the cache directory,
keyed by its path, modification time, size, the placeholder values it was expanded with
and the package version; any change to one of these is a miss. Only valid specs are
stored: broken ones are re-checked so their messages always reflect the file. The cache
is an optimisation only: any error reading or writing it is ignored.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import tempfile
from collections.abc import Hashable
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from nuro_ml import settings
from nuro_ml.pipelines import operators
from nuro_ml.pipelines.checks import CheckedPipeline, CheckedStage

log = logging.getLogger(__name__)

#: Bumped whenever the stored layout or the meaning of a check changes.
FORMAT = 1


def cache_dir() -> Path | None:
    """``NURO_ML_PIPELINE_CACHE_DIR``; default ``<data dir>/cache/pipelines``; empty disables it."""
    configured = os.environ.get("NURO_ML_PIPELINE_CACHE_DIR")
    if configured is not None:
        return Path(configured) if configured else None
    return settings.data_dir() / "cache" / "pipelines"


@cache
def _package_version() -> str:
    try:
        return metadata.version("nuro-ml-platform")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class _Entry:
    key: Hashable
    spec: Any
    stages: dict[str, tuple[str, dict[str, Any], str | None, bool]]
    asset_uris: dict[str, str]


def _file_for(directory: Path, spec_path: Path) -> Path:
    digest = hashlib.sha256(os.path.abspath(spec_path).encode()).hexdigest()[:32]
    return directory / f"{digest}.pickle"


def _full_key(key: Hashable) -> Hashable:
    return (FORMAT, _package_version(), key)


def load(spec_path: Path, key: Hashable) -> CheckedPipeline | None:
    """The cached checked pipeline for this file and key, or None."""
    directory = cache_dir()
    if directory is None:
        return None
    try:
        with _file_for(directory, spec_path).open("rb") as fh:
            entry = pickle.load(fh)
    except FileNotFoundError:
        return None
    except Exception as err:
        log.debug("Ignoring unreadable pipeline cache entry for %s: %s", spec_path, err)
        return None
    if not isinstance(entry, _Entry) or entry.key != _full_key(key):
        return None
    try:
        stages = {
            stage_id: CheckedStage(
                stage_id, entry.spec.stages[stage_id], operators.load(name), args, kind, teardown
            )
            for stage_id, (name, args, kind, teardown) in entry.stages.items()
        }
    except (operators.OperatorLoadError, KeyError):
        return None
    return CheckedPipeline(spec=entry.spec, stages=stages, asset_uris=entry.asset_uris)


def store(spec_path: Path, key: Hashable, pipeline: CheckedPipeline) -> None:
    """Remember a checked pipeline (atomically; concurrent writers are harmless)."""
    directory = cache_dir()
    if directory is None:
        return
    entry = _Entry(
        key=_full_key(key),
        spec=pipeline.spec,
        stages={
            stage_id: (stage.spec.operator, stage.args, stage.kind, stage.teardown)
            for stage_id, stage in pipeline.stages.items()
        },
        asset_uris=pipeline.asset_uris,
    )
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                pickle.dump(entry, fh, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, _file_for(directory, spec_path))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except Exception as err:
        log.debug("Not caching checked pipeline %s: %s", spec_path, err)
