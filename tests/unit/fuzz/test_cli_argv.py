"""Random argument vectors to every ``nuro-ml`` sub-command, run in-process.

The property: the command exits 0, 1 or 2 within the time limit, never prints a traceback, and
when it fails it says so in one line that starts with the command's name (or, for ``validate``,
in ``file:line:col: field: message`` lines). Sub-commands are found by walking the parser, so a
new one is fuzzed without being listed here; only those that start services or write large
outputs have their work replaced by a recorder, after their arguments are parsed and checked
(see REPLACED).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from nuro_ml.cli import build_parser

from tests.unit.cli.conftest import Outcome, run_cli
from tests.unit.fuzz.limits import fuzz_settings, time_limit

TRACE = Path(__file__).parents[1] / "capacity" / "data" / "openb_pod_list_sample.csv"
SPEC = Path(__file__).parents[3] / "dags" / "pipelines" / "feature_refresh.yaml"

#: Examples per sub-command (12 sub-commands today).
EXAMPLES = 40
#: Seconds one command may take before it counts as a hang.
HANG_SECONDS = 60

#: Work replaced by a recorder once the arguments are parsed and checked: the demo and the
#: Airflow home start services; drive logs of the default size and the simulator's plots take
#: seconds per call.
REPLACED = (
    "nuro_ml.demo.run_demo",
    "nuro_ml.demo.run_airflow_home",
    "nuro_ml.etl.generator.generate_interval",
    "nuro_ml.capacity.sim.report.plot",
)

VALIDATE_ISSUE = re.compile(r"^.+:\d+:\d+: .+?: .+$")


def _leaves(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    subactions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subactions:
        yield parser
    for action in subactions:
        for child in dict.fromkeys(action.choices.values()):
            yield from _leaves(child)


LEAVES = {leaf.prog: leaf for leaf in _leaves(build_parser())}


VALUES = [
    "0", "1", "2", "-1", "3", "0.5", "nan", "inf", "-inf", "1e400", "", " ", "a100", "gpu", "nobody",
    "x=1", "gpu=4", "x=lots", "t=2@gpu", "=", "fifo", "fair,fifo", ",", "2025-01-01", "2025-13-01",
    "2025-01-01..2025-01-02", "2025-01-02..2025-01-01", "-", "{tmp}/missing", "{tmp}/file.txt",
    "{tmp}", "{trace}", "{spec}", "sqlite:///{tmp}/other.db", "not-a-url",
    "postgresql+psycopg://u:pw@127.0.0.1:1/x", "a100=p4d.24xlarge", "a100=nope:spot",
]  # fmt: skip


def _arguments(leaf: argparse.ArgumentParser) -> st.SearchStrategy[list[str]]:
    """Options with values (mostly), bare options and loose words, in any order."""
    # --debug is left out: it asks for the traceback.
    options = [s for a in leaf._actions for s in a.option_strings if s != "--debug"]
    choices = [
        str(c) for a in leaf._actions if a.choices and not isinstance(a.choices, dict) for c in a.choices
    ]
    value = st.one_of(
        st.sampled_from(VALUES + choices),
        st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=10),
    )
    pair = st.tuples(st.sampled_from(options), value).map(list)
    flag = st.sampled_from(options).map(lambda option: [option])
    word = value.map(lambda text: [text])
    groups = st.lists(st.one_of(pair, pair, flag, word), max_size=5)
    return groups.map(lambda items: [w for item in items for w in item])


def _record(*args: object, **kwargs: object) -> list[Path]:
    return []


@pytest.fixture(scope="module")
def fuzz_env(cli_home: Path) -> Iterator[Path]:
    """No network, no services: AWS calls fail fast and plots are not drawn."""
    (cli_home / "file.txt").write_text("not a trace, not a spec: just text\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
        patch.setenv("AWS_MAX_ATTEMPTS", "1")
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        for target in REPLACED:
            patch.setattr(target, _record)
        yield cli_home


def check(prog: str, outcome: Outcome) -> None:
    assert "Traceback" not in outcome.text, outcome.text
    assert outcome.code in (0, 1, 2), outcome.text
    if outcome.code == 0:
        return
    if prog == "nuro-ml validate" and outcome.code == 1 and not outcome.error_lines:
        issues = outcome.out.splitlines()
        assert issues and all(VALIDATE_ISSUE.match(line) for line in issues), outcome.out
        return
    [line] = outcome.error_lines
    assert line.startswith("nuro-ml"), line
    assert "unexpected" not in line, line


@pytest.mark.parametrize("prog", sorted(LEAVES))
@fuzz_settings(EXAMPLES)
@given(data=st.data())
def test_random_arguments_never_end_in_a_traceback(prog: str, data, fuzz_env: Path, capsys) -> None:
    leaf = LEAVES[prog]
    words = data.draw(_arguments(leaf), label="arguments")
    substitutions = {"{tmp}": str(fuzz_env), "{trace}": str(TRACE), "{spec}": str(SPEC)}
    for key, value in substitutions.items():
        words = [word.replace(key, value) for word in words]
    argv = [*prog.split()[1:], *words]

    with time_limit(HANG_SECONDS, argv):
        outcome = run_cli(argv, capsys)

    event(
        "rejected by the parser" if outcome.code == 2 and "usage:" in outcome.err else f"exit {outcome.code}"
    )
    check(prog, outcome)


def test_every_sub_command_is_fuzzed() -> None:
    assert {"nuro-ml gen-logs", "nuro-ml sim", "nuro-ml validate", "nuro-ml demo"} <= set(LEAVES)
    assert {p for p in LEAVES if p.startswith("nuro-ml quota ")} >= {
        "nuro-ml quota show",
        "nuro-ml quota set-quota",
        "nuro-ml quota usage",
    }


def test_gen_logs_bad_date_names_the_argument(fuzz_env: Path, capsys) -> None:
    outcome = run_cli(["gen-logs", "--out", str(fuzz_env / "logs"), "--dates", "2025-13-01"], capsys)
    assert outcome.code == 2
    assert "--dates" in outcome.err and "2025-13-01" in outcome.err
