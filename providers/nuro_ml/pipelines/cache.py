"""On-disk cache of checked specs' plans, so re-parsing unchanged files skips YAML and checks.

Airflow parses a DAG file in a fresh process each time, so an in-memory cache never helps
the DAG processor. The plan of each spec that passed every check (:mod:`.plan`, plain data)
is stored in one file per spec under the cache directory, keyed by the spec's modification
time, size, the placeholder values it was expanded with and the package version; any
change to one of these is a miss. Only valid specs are
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

from nuro_ml import settings
from nuro_ml.pipelines.plan import DagPlan

log = logging.getLogger(__name__)

#: Bumped whenever the stored layout or the meaning of a check changes.
FORMAT = 3


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
    plan: DagPlan


class SpecCache:
    """Plans of valid specs in one directory (None: caching disabled)."""

    def __init__(self, directory: Path | None) -> None:
        self._directory = str(directory) if directory is not None else None

    @classmethod
    def current(cls) -> SpecCache:
        """The cache configured by the environment (see :func:`cache_dir`)."""
        return cls(cache_dir())

    def _file_for(self, directory: str, spec_path: Path) -> str:
        digest = hashlib.sha256(os.path.abspath(spec_path).encode()).hexdigest()[:32]
        return os.path.join(directory, f"{digest}.pickle")

    @staticmethod
    def _full_key(key: Hashable) -> Hashable:
        return (FORMAT, _package_version(), key)

    def load(self, spec_path: Path, key: Hashable) -> DagPlan | None:
        """The cached plan for this file and key, or None."""
        if self._directory is None:
            return None
        try:
            with open(self._file_for(self._directory, spec_path), "rb") as fh:
                entry = pickle.load(fh)
            if entry.key == self._full_key(key) and isinstance(entry.plan, DagPlan):
                return entry.plan  # type: ignore[no-any-return]
        except FileNotFoundError:
            pass
        except Exception as err:
            log.debug("Ignoring unreadable pipeline cache entry for %s: %s", spec_path, err)
        return None

    def store(self, spec_path: Path, key: Hashable, plan: DagPlan) -> None:
        """Remember a checked spec's plan (atomically; concurrent writers are harmless)."""
        if self._directory is None:
            return
        entry = _Entry(key=self._full_key(key), plan=plan)
        try:
            os.makedirs(self._directory, mode=0o700, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self._directory, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    pickle.dump(entry, fh, protocol=pickle.HIGHEST_PROTOCOL)
                os.replace(tmp, self._file_for(self._directory, spec_path))
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except Exception as err:
            log.debug("Not caching the plan of %s: %s", spec_path, err)
