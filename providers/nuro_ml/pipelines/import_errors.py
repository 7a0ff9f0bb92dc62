"""Report a broken spec as an Airflow import error of the YAML file itself.

Airflow parses ``dags/yaml_pipelines.py`` like any DAG file: its importer collects
``DagImportError`` records, keyed by file path, into the ``DagImportResult`` of that
import, and the DAG processor stores each one as an import error of its file. An
exception raised by the loader would be an error of the loader file, which hides every
other pipeline and marks all of their DAGs stale. Instead, each broken spec is appended to
the running import's result under the spec's own path (relative to the bundle, like every
other import error), so the UI lists ``pipelines/broken.yaml`` with its line, column and
field, and every other pipeline keeps loading.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from nuro_ml.pipelines.issues import SpecIssue

log = logging.getLogger(__name__)

#: How the error is labelled in Airflow's import-error records.
ERROR_TYPE = "pipeline_spec"


class ImportContext:
    """The DAG-file import running on this thread (Airflow's importer's result and file path)."""

    def __init__(self, result: Any, loader_path: str) -> None:
        self._result = result
        self._loader_path = loader_path

    def name_of(self, spec_path: Path) -> str:
        """The spec's path as Airflow names files: relative to the bundle root when the loader's is."""
        return relative_to_bundle(spec_path, self._loader_path, self._result.file_path)

    def add(self, spec_path: Path, issues: Sequence[SpecIssue]) -> None:
        """Append the spec's issues to the import's errors, keyed by the spec's own path."""
        from airflow.dag_processing.importers.base import DagImportError

        first = issues[0]
        message = "Invalid pipeline spec ({} problem{}):\n{}".format(
            len(issues), "" if len(issues) == 1 else "s", "\n".join(issue.format() for issue in issues)
        )
        self._result.errors.append(
            DagImportError(
                file_path=self.name_of(spec_path),
                message=message,
                error_type=ERROR_TYPE,
                line_number=first.line,
                column_number=first.column,
            )
        )


def current() -> ImportContext | None:
    """The running DAG-file import, found on the call stack; None outside Airflow's parsing."""
    try:
        from airflow.dag_processing.importers.base import DagImportResult
    except ImportError:
        return None
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        result = frame.f_locals.get("result")
        if isinstance(result, DagImportResult):
            filepath = frame.f_locals.get("filepath")
            return ImportContext(result, str(filepath) if filepath else result.file_path)
        frame = frame.f_back
    return None


def relative_to_bundle(spec_path: Path, loader_path: str, loader_relative: str) -> str:
    """``spec_path`` relative to the bundle root, derived from the loader's absolute and relative paths."""
    spec_path = spec_path.resolve()
    if os.path.isabs(loader_relative):
        return str(spec_path)
    loader_abs = os.path.abspath(loader_path)
    root = (
        loader_abs[: len(loader_abs) - len(loader_relative)] if loader_abs.endswith(loader_relative) else None
    )
    if not root:
        return str(spec_path)
    return os.path.relpath(spec_path, root)


def report(context: ImportContext | None, spec_path: Path, issues: Sequence[SpecIssue]) -> bool:
    """Log the issues and record them as the spec file's import error; False outside a DAG-file import."""
    for issue in issues:
        log.error("Pipeline spec error: %s", issue.format())
    if context is None or not issues:
        return False
    context.add(spec_path, issues)
    return True
