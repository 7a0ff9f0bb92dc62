"""The documentation site covers what the code references: refs, examples, variables, connections."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from airflow.dag_processing.dagbag import DagBag
from nuro_ml.settings import REPO_ROOT

DOCS = REPO_ROOT / "docs"
CODE_DIRS = ("providers/nuro_ml", "dags", "plugins", "workloads")
REF = re.compile(r":ref:`(?:[^`<]*<)?(?P<target>[^`<>]+)>?`")
LABEL = re.compile(r"^\.\. _(?P<label>[^:]+:[^:]+|[^:]+):\s*$", re.MULTILINE)
LITERALINCLUDE = re.compile(r"^\s*\.\. literalinclude:: (?P<path>\S+)", re.MULTILINE)
ENV_VAR = re.compile(r"\bNURO_ML_[A-Z0-9_]*[A-Z0-9]\b")


def _code_files() -> list[Path]:
    files: list[Path] = []
    for folder in CODE_DIRS:
        files += [p for p in (REPO_ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts]
    return files


def _rst_files() -> list[Path]:
    return [p for p in DOCS.rglob("*.rst") if "_build" not in p.parts]


def _labels() -> set[str]:
    return {m.group("label") for path in _rst_files() for m in LABEL.finditer(path.read_text())}


def test_every_ref_in_a_docstring_has_a_docs_label() -> None:
    labels = _labels()
    used: dict[str, list[str]] = {}
    for path in _code_files():
        for match in REF.finditer(path.read_text()):
            used.setdefault(match.group("target"), []).append(str(path.relative_to(REPO_ROOT)))
    assert len(used) >= 20, sorted(used)
    missing = {target: where for target, where in used.items() if target not in labels}
    assert not missing, f"docstrings reference labels no docs page defines: {missing}"


def test_the_ref_pattern_reads_both_forms() -> None:
    text = "see :ref:`howto/operator:X` and :ref:`the Ray connection <howto/connection:ray>`"
    assert [m.group("target") for m in REF.finditer(text)] == ["howto/operator:X", "howto/connection:ray"]


def _included_files() -> set[Path]:
    included = set()
    for rst in _rst_files():
        for match in LITERALINCLUDE.finditer(rst.read_text()):
            included.add((rst.parent / match.group("path")).resolve())
    return included


def test_every_included_file_exists_and_examples_are_included() -> None:
    included = _included_files()
    assert all(path.is_file() for path in included), sorted(map(str, included))
    examples = {p.resolve() for p in (DOCS / "examples").glob("*.py")}
    assert examples and examples <= included, sorted(map(str, examples - included))


def test_every_included_example_dag_parses_in_a_dagbag() -> None:
    dag_files = sorted(p for p in _included_files() if p.suffix == ".py")
    assert dag_files
    for path in dag_files:
        bag = DagBag(dag_folder=str(path))
        assert not bag.import_errors, bag.import_errors
        assert bag.dag_ids, f"{path} defines no DAG"


def test_every_environment_variable_is_in_the_configuration_reference() -> None:
    from nuro_ml.features.config import ENV_PREFIX, FeastSettings

    documented = set(ENV_VAR.findall((DOCS / "configuration.rst").read_text()))
    # The Feast table is generated from the settings model, one variable per field.
    documented |= {ENV_PREFIX + name.upper() for name in FeastSettings.model_fields}
    used: set[str] = set()
    for path in _code_files():
        used |= set(ENV_VAR.findall(path.read_text()))
    for extra in ("docker/docker-compose.yaml", "docker/Dockerfile", "deploy/helm/airflow/values.yaml"):
        if (REPO_ROOT / extra).exists():
            used |= set(ENV_VAR.findall((REPO_ROOT / extra).read_text()))
    assert used, "no NURO_ML_* variable found in the code"
    assert not used - documented, f"undocumented variables: {sorted(used - documented)}"


@pytest.mark.parametrize(
    "conn_type",
    [
        c["connection-type"]
        for c in yaml.safe_load((REPO_ROOT / "providers/nuro_ml/provider.yaml").read_text())[
            "connection-types"
        ]
    ],
)
def test_every_connection_type_has_a_guide(conn_type: str) -> None:
    assert f"howto/connection:{conn_type}" in _labels()
    guide = (DOCS / "connections" / f"{conn_type}.rst").read_text()
    assert f".. nuro-connection-fields:: {conn_type}" in guide
