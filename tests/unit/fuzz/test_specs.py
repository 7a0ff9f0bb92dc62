"""Random YAML documents and mutated example specs, fed to ``nuro-ml validate`` and the DAG loader.

The property: validate exits 0 or 1 and prints only ``file:line:col: field: message`` lines that
point into the file; the loader never raises, and it breaks exactly the specs validate rejects.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from nuro_ml.pipelines.loader import compile_folder

from tests.unit.cli.conftest import run_cli
from tests.unit.fuzz.limits import fuzz_settings, time_limit

EXAMPLE_SPECS = sorted((Path(__file__).parents[3] / "dags" / "pipelines").glob("*.yaml"))
#: Examples per test; each runs validate and, for mutations, the loader too.
YAML_EXAMPLES = 100
MUTATION_EXAMPLES = 100
HANG_SECONDS = 60

#: After the file name; a field path holds the spec's own keys, which may contain anything.
ISSUE = re.compile(r"^:(?P<line>\d+):(?P<col>\d+): (?P<field>.+?): (?P<message>.+)$")
_names = itertools.count()

FIELDS = [
    "dag_id", "description", "schedule", "start_date", "end_date", "timezone", "catchup", "owner", "team",
    "tags", "params", "assets", "stages", "operator", "args", "depends_on", "setups", "teardown", "kind",
    "retries", "produces", "consumes", "doc", "default_retries", "retry_delay", "dagrun_timeout",
    "render_template_as_native_obj", "bash_command", "type", "default", "uri",
]  # fmt: skip
SNIPPETS = [
    "{{", "}}", "{{ ds }}", "{{ dag_run.run_after }", "{% if x %}", "{% endif %}", "{{ x | nofilter }}",
    "${data_dir}", "${nope}", "bash", "empty", "ray_job", "gpu_capacity", "2026-11-01", "0 2 * * *",
    "@daily", "PT5M", "UTC", "Mars/Olympus", "-1", "1e400", "nan",
]  # fmt: skip


def _scalars() -> st.SearchStrategy[object]:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from(SNIPPETS + FIELDS),
        st.text(max_size=20),
        st.dates(),
    )


def _documents() -> st.SearchStrategy[object]:
    keys = st.one_of(st.sampled_from(FIELDS), st.text(max_size=8), st.integers(-3, 3))
    values = st.recursive(
        _scalars(),
        lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=5)),
        max_leaves=25,
    )
    # Mostly mappings with spec-like fields, which get past the first check.
    return st.one_of(st.dictionaries(st.sampled_from(FIELDS), values, max_size=8), values)


def _mutate(text: str, data: st.DataObject) -> str:
    lines = text.splitlines(keepends=True)
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        if not lines:
            break
        index = data.draw(st.integers(0, len(lines) - 1), label="line")
        operation = data.draw(
            st.sampled_from(["delete", "duplicate", "swap", "indent", "dedent", "splice", "truncate"]),
            label="operation",
        )
        line = lines[index]
        if operation == "delete":
            del lines[index]
        elif operation == "duplicate":
            lines.insert(index, line)
        elif operation == "swap":
            other = data.draw(st.integers(0, len(lines) - 1), label="other line")
            lines[index], lines[other] = lines[other], lines[index]
        elif operation == "indent":
            lines[index] = "  " + line
        elif operation == "dedent":
            lines[index] = line[2:] if line.startswith("  ") else line
        elif operation == "splice":
            start = data.draw(st.integers(0, len(line)), label="at")
            end = data.draw(st.integers(start, min(len(line), start + 12)), label="to")
            insert = data.draw(
                st.one_of(st.sampled_from(SNIPPETS + FIELDS + [":", "- ", "'", '"']), st.text(max_size=6))
            )
            lines[index] = line[:start] + insert + line[end:]
        else:
            lines[index] = line[: data.draw(st.integers(0, len(line)), label="cut")]
            del lines[index + 1 :]
    return "".join(lines)


def _validate(path: Path, capsys: pytest.CaptureFixture[str]) -> bool:
    """Run ``nuro-ml validate`` on one file; True when it is valid. Checks the output's form."""
    with time_limit(HANG_SECONDS, path.read_text(errors="replace")):
        outcome = run_cli(["validate", "--no-serialize", str(path)], capsys)
    assert "Traceback" not in outcome.text, outcome.text
    assert outcome.code in (0, 1), outcome.text
    assert not outcome.error_lines, outcome.err
    issues = outcome.out.splitlines()
    assert bool(issues) == (outcome.code == 1), outcome.text
    line_count = max(1, len(path.read_text(errors="replace").splitlines()) + 1)
    for issue in issues:
        assert issue.startswith(str(path)), issue
        match = ISSUE.match(issue.removeprefix(str(path)))
        assert match is not None, issue
        assert 1 <= int(match["line"]) <= line_count and int(match["col"]) >= 1, issue
    return outcome.code == 0


def _write(folder: Path, text: str) -> Path:
    # A new name per example: the loader's cache keys on path, size and modification time.
    path = folder / f"spec_{next(_names)}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@fuzz_settings(YAML_EXAMPLES)
@given(document=_documents())
def test_random_yaml_documents(document: object, cli_home: Path, capsys) -> None:
    folder = cli_home / "random-yaml"
    folder.mkdir(exist_ok=True)
    path = _write(folder, yaml.safe_dump(document, allow_unicode=True))

    _validate(path, capsys)


@fuzz_settings(YAML_EXAMPLES)
@given(text=st.text(max_size=200))
def test_random_text(text: str, cli_home: Path, capsys) -> None:
    folder = cli_home / "random-text"
    folder.mkdir(exist_ok=True)

    _validate(_write(folder, text), capsys)


@fuzz_settings(MUTATION_EXAMPLES)
@given(source=st.sampled_from(EXAMPLE_SPECS), data=st.data())
def test_mutated_example_specs(source: Path, data: st.DataObject, cli_home: Path, capsys) -> None:
    folder = cli_home / f"mutated-{next(_names)}" / "pipelines"
    folder.mkdir(parents=True)
    path = _write(folder, _mutate(source.read_text(), data))

    valid = _validate(path, capsys)
    with time_limit(HANG_SECONDS, path.name):
        loaded = compile_folder(folder)

    assert bool(loaded.dags) == valid
    assert bool(loaded.broken) == (not valid)
    for issues in loaded.broken.values():
        assert issues and all(issue.message and issue.line >= 1 for issue in issues)


def test_example_specs_are_valid(cli_home: Path, capsys) -> None:
    # The mutations start from valid specs.
    assert len(EXAMPLE_SPECS) >= 3
    for spec in EXAMPLE_SPECS:
        assert _validate(spec, capsys), spec
