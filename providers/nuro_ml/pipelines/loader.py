"""Spec files -> DAGs, with every problem tied to file, line, column and field.

:func:`check_file` runs all checks short of building the DAG (what ``nuro-ml validate``
needs); :func:`compile_file` also builds it; :func:`compile_folder` does that for a folder, one
DAG per file, keeping each broken file's issues to itself. :func:`load_dags` returns the DAGs
(for ``dags/yaml_pipelines.py``) and :func:`check_folder` raises one error naming every broken
file (for ``dags/yaml_pipelines_check.py``).

Checked specs are cached by path, modification time, size and the values of the ``${...}``
placeholders, in memory and on disk (:mod:`nuro_ml.pipelines.cache`), so re-parsing an
unchanged folder only rebuilds the DAGs.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from pydantic import ValidationError

from nuro_ml.pipelines import cache, checks, compiler, import_errors
from nuro_ml.pipelines.plan import DagPlan, make_plan
from nuro_ml.pipelines.spec import PipelineSpec
from nuro_ml.specs.issues import Problem, SpecIssue, from_validation_error, locate
from nuro_ml.specs.yaml_source import Document, parse

if TYPE_CHECKING:
    from airflow.sdk import DAG

log = logging.getLogger(__name__)

SPEC_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Checked:
    """Outcome of checking one file: the plan to build its DAG from, or the issues found."""

    #: The parsed file; None when the plan came from the on-disk cache.
    document: Document | None
    plan: DagPlan | None
    issues: tuple[SpecIssue, ...]


@dataclass(frozen=True)
class LoadEnv:
    """What checking depends on besides the file: placeholder values and the on-disk cache."""

    placeholders: dict[str, str]
    disk: cache.SpecCache

    @classmethod
    def current(cls) -> LoadEnv:
        return cls(checks.placeholder_values(), cache.SpecCache.current())


_CacheKey = tuple[int, int, str, tuple[tuple[str, str], ...]]
_memory: dict[str, tuple[_CacheKey, Checked]] = {}


def check_file(path: Path, *, display: str | None = None, env: LoadEnv | None = None) -> Checked:
    """Parse, validate and cross-check one spec file (cached while the file is unchanged)."""
    name = display or str(path)
    env = env or LoadEnv.current()
    try:
        stat = os.stat(path)
    except OSError as err:
        return Checked(
            None, None, (SpecIssue(name, 1, 1, "(file)", f"cannot read the file: {err.strerror}"),)
        )
    placeholders = tuple(env.placeholders.items())
    key: _CacheKey = (stat.st_mtime_ns, stat.st_size, name, placeholders)
    remembered = _memory.get(str(path))
    if remembered is not None and remembered[0] == key:
        return remembered[1]
    # Only valid specs go to disk, and their plans carry no message naming the file: the
    # display name is not part of their key.
    disk_key = (stat.st_mtime_ns, stat.st_size, placeholders)
    plan = env.disk.load(path, disk_key)
    if plan is not None:
        checked = Checked(None, plan, ())
    else:
        checked = _check_uncached(path, name, env.placeholders)
        if checked.plan is not None:
            env.disk.store(path, disk_key, checked.plan)
    # Valid specs are remembered without their node tree, which only locates problems.
    _memory[str(path)] = (key, Checked(None, checked.plan, ()) if checked.plan is not None else checked)
    return checked


def _check_uncached(path: Path, name: str, placeholders: dict[str, str]) -> Checked:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        return Checked(None, None, (SpecIssue(name, 1, 1, "(file)", f"cannot read the file: {err}"),))
    try:
        document = parse(text)
    except yaml.MarkedYAMLError as err:
        return Checked(None, None, (_yaml_issue(name, err),))
    except yaml.YAMLError as err:
        return Checked(None, None, (SpecIssue(name, 1, 1, "(yaml)", f"invalid YAML: {err}"),))
    if not isinstance(document.data, dict):
        got = "an empty file" if document.data is None else f"a {type(document.data).__name__}"
        problem = Problem((), f"a pipeline spec is a mapping of fields (dag_id, stages, ...), got {got}")
        return Checked(document, None, tuple(locate(name, document, [problem])))
    try:
        spec = PipelineSpec.model_validate(document.data)
    except ValidationError as err:
        return Checked(document, None, tuple(from_validation_error(name, document, err, PipelineSpec)))
    pipeline, problems = checks.check(spec, placeholders)
    if pipeline is None:
        return Checked(document, None, tuple(locate(name, document, problems)))
    return Checked(document, make_plan(pipeline), ())


def _yaml_issue(name: str, err: yaml.MarkedYAMLError) -> SpecIssue:
    mark = err.problem_mark or err.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    message = f"invalid YAML: {err.problem or err}"
    context = err.context_mark
    if err.context and context is not None and (context.line + 1, context.column + 1) != (line, column):
        message += f" ({err.context} started at line {context.line + 1}, column {context.column + 1})"
    elif err.context:
        message += f" ({err.context})"
    return SpecIssue(name, line, column, "(yaml)", message)


def compile_file(
    path: Path, *, display: str | None = None, env: LoadEnv | None = None
) -> tuple[DAG | None, tuple[SpecIssue, ...]]:
    """Check one spec file and build its DAG."""
    checked = check_file(path, display=display, env=env)
    if checked.plan is None:
        return None, checked.issues
    name = display or str(path)
    dag, problems = compiler.build(checked.plan, source=name)
    if problems:
        # A spec served from the on-disk cache comes without its node tree; parse it for positions.
        document = checked.document or _document_or_none(path)
        return None, tuple(locate(name, document, problems))
    return dag, ()


def _document_or_none(path: Path) -> Document | None:
    try:
        return parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None


def duplicate_dag_id(
    path: Path, name: str, dag_id: str, other: str, env: LoadEnv | None = None
) -> tuple[SpecIssue, ...]:
    """The issue for a spec whose dag_id another spec already uses, at its ``dag_id`` line."""
    checked = check_file(path, display=name, env=env)
    document = checked.document or _document_or_none(path)
    problem = Problem(("dag_id",), f"dag_id {dag_id!r} is already defined by {other}")
    return tuple(locate(name, document, [problem]))


def spec_files(folder: Path) -> list[Path]:
    """Spec files directly in ``folder``, in name order (hidden files skipped)."""
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return []
    return sorted(
        Path(entry.path)
        for entry in entries
        if entry.name.endswith(SPEC_SUFFIXES) and not entry.name.startswith(".") and entry.is_file()
    )


@dataclass(frozen=True)
class FolderLoad:
    """The DAGs built from a folder of specs and the issues of each spec that did not build."""

    #: ``{variable name: DAG}`` for the loader module's globals, where Airflow finds them.
    dags: dict[str, DAG]
    #: Spec name (relative to the DAG file's folder) -> its issues, in file-name order.
    broken: dict[str, tuple[SpecIssue, ...]]


def compile_folder(folder: Path | str, files: Iterable[Path] | None = None) -> FolderLoad:
    """Build one DAG per spec file in ``folder``; a broken spec leaves out only its own DAG.

    Specs are named relative to the folder holding the DAG file (``folder``'s parent), e.g.
    ``pipelines/etl.yaml``, which is how they sit next to the loader in a DAG bundle.
    """
    folder = Path(folder)
    root = folder.resolve().parent
    env = LoadEnv.current()
    dags: dict[str, DAG] = {}
    broken: dict[str, tuple[SpecIssue, ...]] = {}
    defined_in: dict[str, str] = {}
    # Building DAGs allocates many long-lived objects, which makes the cyclic collector rescan
    # everything Airflow imported again and again (40% of the load time); it resumes after.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for path in files if files is not None else spec_files(folder):
            name = _display_name(path, root)
            dag, issues = compile_file(path, display=name, env=env)
            if dag is not None and dag.dag_id in defined_in:
                issues, dag = duplicate_dag_id(path, name, dag.dag_id, defined_in[dag.dag_id], env), None
            if dag is None:
                broken[name] = issues
                continue
            defined_in[dag.dag_id] = name
            dags[f"pipeline:{dag.dag_id}"] = dag
    finally:
        if gc_was_enabled:
            gc.enable()
    return FolderLoad(dags, broken)


def _display_name(path: Path, root: Path) -> str:
    resolved = path.resolve()
    return str(resolved.relative_to(root)) if resolved.is_relative_to(root) else str(resolved)


def load_dags(folder: Path | str, files: Iterable[Path] | None = None) -> dict[str, DAG]:
    """The DAGs of the valid specs in ``folder`` (for ``dags/yaml_pipelines.py``).

    Broken specs are logged and left out. They are not import errors of this DAG file: Airflow
    marks every DAG of a file with an import error stale, which would stop all pipelines for one
    bad spec. :func:`check_folder`, run by a DAG file of its own, reports them.
    """
    loaded = compile_folder(folder, files)
    for issues in loaded.broken.values():
        for issue in issues:
            log.error("Pipeline spec error (its DAG is not loaded): %s", issue.format())
    log.info("Loaded %d pipeline DAG(s) from %s", len(loaded.dags), folder)
    return loaded.dags


def check_folder(folder: Path | str, files: Iterable[Path] | None = None) -> None:
    """Raise :class:`~nuro_ml.exceptions.PipelineSpecError` naming every broken spec in ``folder``.

    Run at import time by ``dags/yaml_pipelines_check.py``, which defines no DAG, so that
    Airflow records the problems as that file's import error; see :mod:`nuro_ml.pipelines.import_errors`.
    """
    error = import_errors.spec_error(compile_folder(folder, files).broken)
    if error is not None:
        raise error
