"""How broken pipeline specs reach Airflow's import errors, and why through a DAG file of their own.

Airflow 3.3 keys an import error by ``(bundle, relative file path)`` and keeps it only while
that path is a DAG file it discovers and parses:

* the DAG processor stores the errors of a parse and clears those of the parsed file when it
  parses cleanly (``collection._update_import_errors``, ``files_parsed``);
* on every bundle refresh (``[dag_processor] refresh_interval``) it deletes the errors of every
  path that is not one of the bundle's DAG files (``DagFileProcessorManager.clear_orphaned_import_errors``).
  DAG files are ``*.py`` files and zip archives (``list_py_file_paths``); the pluggable
  ``DagImporterRegistry`` is not consulted there, so a ``*.yaml`` path is never one.
* an import error of a file marks every DAG whose ``relative_fileloc`` is that file stale and
  ``has_import_errors`` (``_update_import_errors``), so the scheduler stops all of them.

An error stored under the spec's own path therefore vanished at the next bundle refresh and came
back at the next parse of the loader, and it was never cleared by a parse once the spec was fixed.
An error stored under ``yaml_pipelines.py`` would be stable, but would stop every pipeline for
one bad spec, since all their DAGs are defined by that file (workers re-import it to run tasks).

So the specs are checked twice: ``dags/yaml_pipelines.py`` builds the DAGs of the valid specs
and only logs the broken ones, and ``dags/yaml_pipelines_check.py``, which defines no DAG,
raises :class:`~nuro_ml.exceptions.PipelineSpecError` naming every broken spec with
``file:line:col: field: message``. Airflow records that as the check file's import error, which
each parse refreshes, a clean parse clears, and no refresh deletes, and which stops no DAG.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from nuro_ml.exceptions import PipelineSpecError
from nuro_ml.specs.issues import SpecIssue


def spec_error(broken: Mapping[str, Sequence[SpecIssue]]) -> PipelineSpecError | None:
    """One error listing every problem of every broken spec, by file; None when none is broken."""
    broken = {name: issues for name, issues in broken.items() if issues}
    if not broken:
        return None
    count = sum(len(issues) for issues in broken.values())
    header = "Invalid pipeline spec{} ({} problem{} in {}); the other pipelines are loaded:".format(
        "" if len(broken) == 1 else "s",
        count,
        "" if count == 1 else "s",
        ", ".join(broken),
    )
    lines = [issue.format() for issues in broken.values() for issue in issues]
    return PipelineSpecError("\n".join([header, *lines]))
