"""``nuro-ml validate``: check pipeline specs the way the DAG processor will load them.

Each problem is printed as ``file:line:col: field: message`` (the format editors and CI
annotations understand); the exit code is 1 when any file has a problem.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

from nuro_ml.exceptions import UsageError
from nuro_ml.specs.issues import SpecIssue


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``validate`` sub-command."""
    parser = subparsers.add_parser(
        "validate",
        help="check YAML pipeline specs (files or folders)",
        description="Check YAML pipeline specs: YAML syntax, fields and types, references, cycles, "
        "operator arguments against the operators' signatures, and the syntax of Jinja templates "
        "(compiled with Airflow's environment, not rendered); then build and serialize each DAG.",
    )
    parser.add_argument(
        "paths", nargs="*", type=Path, metavar="PATH", help="spec files, or folders of *.yaml specs"
    )
    parser.add_argument(
        "--no-serialize",
        action="store_true",
        help="skip serializing each DAG the way the DAG processor stores it (faster)",
    )
    parser.add_argument(
        "--list-operators", action="store_true", help="print the operator short names and exit"
    )
    parser.set_defaults(func=run)


def _expand(paths: Iterable[Path]) -> tuple[list[Path], list[SpecIssue]]:
    from nuro_ml.pipelines.loader import spec_files

    files: list[Path] = []
    issues: list[SpecIssue] = []
    for path in paths:
        if path.is_dir():
            found = spec_files(path)
            if not found:
                issues.append(SpecIssue(str(path), 1, 1, "(folder)", "no *.yaml or *.yml spec files here"))
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            issues.append(SpecIssue(str(path), 1, 1, "(file)", "no such file or folder"))
    return files, issues


def _serialization_issue(dag: object, name: str) -> SpecIssue | None:
    from airflow.serialization.serialized_objects import DagSerialization

    try:
        DagSerialization.to_dict(dag)
    except Exception as err:
        return SpecIssue(
            name,
            1,
            1,
            "(dag)",
            f"the DAG cannot be serialized for the scheduler: {type(err).__name__}: {err}",
        )
    return None


def list_operators() -> str:
    """Short names, their classes and usual phases, one per line."""
    from nuro_ml.pipelines.operators import OPERATORS

    width = max(len(name) for name in OPERATORS)
    return "\n".join(
        f"{name:<{width}}  {entry.class_path}  ({entry.phase or 'any phase'})"
        for name, entry in OPERATORS.items()
    )


def run(args: argparse.Namespace) -> int:
    """Validate every spec named on the command line; 0 when all are valid."""
    if args.list_operators:
        print(list_operators())
        return 0
    if not args.paths:
        raise UsageError("name at least one spec file or folder (or use --list-operators)")
    from nuro_ml.pipelines.loader import compile_file, duplicate_dag_id

    files, issues = _expand(args.paths)
    invalid = 0
    seen: dict[str, str] = {}
    for path in files:
        dag, file_issues = compile_file(path)
        problems = list(file_issues)
        if dag is not None:
            if dag.dag_id in seen:
                problems.extend(duplicate_dag_id(path, str(path), dag.dag_id, seen[dag.dag_id]))
            seen.setdefault(dag.dag_id, str(path))
            if not args.no_serialize and (issue := _serialization_issue(dag, str(path))) is not None:
                problems.append(issue)
        invalid += bool(problems)
        issues.extend(problems)
    for issue in issues:
        print(issue.format())
    print(f"{len(files)} spec file(s) checked, {invalid} invalid", file=sys.stderr)
    return 1 if issues else 0
