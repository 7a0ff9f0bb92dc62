"""Every bad input to ``nuro-ml`` gets one clear line and the right exit code, never a traceback."""

from __future__ import annotations

import argparse
import errno
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from nuro_ml.cli import build_parser, main
from nuro_ml.cli_support import describe_os_error, plain_text, positive_float
from nuro_ml.exceptions import CapacityError

from tests.unit.cli.conftest import run_cli

TRACE = Path(__file__).parents[1] / "capacity" / "data" / "openb_pod_list_sample.csv"

UNCLOSED_JINJA_SPEC = """\
dag_id: unclosed_jinja
start_date: 2026-11-01
stages:
  etl:
    operator: mcap_to_parquet
    args:
      end: "{{ dag_run.run_after }"
"""


@dataclass(frozen=True)
class Case:
    id: str
    argv: list[str]
    code: int
    #: Text the output must contain ({tmp} is the test's folder).
    says: list[str]
    #: Text the output must not contain (secrets, markup).
    never: list[str] = field(default_factory=list)
    #: Whether the command reports through the shared one-line error path.
    one_line: bool = True


CASES = [
    Case(
        "quota for an unknown pool",
        ["quota", "set-quota", "nobody", "--pool", "nopool", "--nominal", "2"],
        1,
        ["nuro-ml quota set-quota: error:", "pool 'nopool' is not registered", "nuro-ml quota set-pool"],
    ),
    Case(
        "gen-logs into a folder that cannot be created",
        ["gen-logs", "--out", "{tmp}/a-file/logs", "--dates", "2025-01-01", "--seconds", "1"],
        1,
        ["nuro-ml gen-logs: error: cannot use {tmp}/a-file/logs", "Not a directory"],
    ),
    Case(
        "sim of a trace without the cluster size",
        ["sim", str(TRACE)],
        2,
        [
            "nuro-ml sim: error: give the cluster with --nodes NODE_LIST (openb node list), "
            "--gpus N or --pool NAME=N"
        ],
    ),
    Case(
        "sim of a trace that does not exist",
        ["sim", "{tmp}/missing.csv", "--gpus", "8"],
        1,
        ["nuro-ml sim: error: trace {tmp}/missing.csv does not exist"],
    ),
    Case(
        "sim with an endless synthetic trace",
        ["sim", "--synthetic", "--hours", "inf"],
        2,
        ["nuro-ml sim: error: argument --hours: 'inf' is out of range; give a finite number greater than 0"],
    ),
    Case(
        "unclosed Jinja expression in a spec argument",
        ["validate", "--no-serialize", "{tmp}/unclosed.yaml"],
        1,
        [
            "{tmp}/unclosed.yaml:7:12: stages.etl.args.end: Jinja template does not compile: unexpected '}'",
            "1 spec file(s) checked, 1 invalid",
        ],
        one_line=False,
    ),
    Case(
        "validate without a spec",
        ["validate"],
        2,
        ["nuro-ml validate: error: name at least one spec file or folder"],
    ),
    Case(
        "help is plain text",
        ["--help"],
        0,
        ["usage: nuro-ml", "The nuro-ml command line"],
        never=["``", ":class:", ":ref:"],
        one_line=False,
    ),
    Case(
        "ledger URL that is not a URL",
        ["quota", "--ledger-url", "not-a-url", "show"],
        2,
        ["nuro-ml quota show: error: --ledger-url 'not-a-url' is not a usable database URL"],
    ),
    Case(
        "ledger database that is not running",
        ["quota", "--ledger-url", "postgresql+psycopg://ops:hunter2@127.0.0.1:1/ledger", "show"],
        1,
        ["cannot use the quota ledger postgresql+psycopg://ops:***@127.0.0.1:1/ledger", "database is up"],
        never=["hunter2"],
    ),
    Case(
        "release of an unknown lease",
        ["quota", "release", "lease-that-never-was"],
        1,
        ["nuro-ml quota release: error: lease 'lease-that-never-was' is not in the ledger"],
    ),
    Case(
        "negative pool capacity",
        ["quota", "set-pool", "a100", "--gpus", "-1"],
        2,
        ["nuro-ml quota set-pool: error: argument --gpus: '-1' is out of range; give an integer at least 0"],
    ),
    Case(
        "malformed price",
        ["quota", "usage", "--price", "a100"],
        2,
        ["nuro-ml quota usage: error: --price 'a100': expected POOL=INSTANCE_TYPE"],
    ),
    Case(
        "demo day that is not a date",
        ["demo", "--date", "2025-13-01"],
        2,
        ["nuro-ml demo: error: argument --date: '2025-13-01' is not a date", "use YYYY-MM-DD"],
    ),
    Case(
        "unknown sub-command",
        ["trian"],
        2,
        ["nuro-ml: error: argument COMMAND: invalid choice: 'trian'"],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_gets_one_clear_line(case: Case, cli_home: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "a-file").write_text("not a folder\n")
    (tmp_path / "unclosed.yaml").write_text(UNCLOSED_JINJA_SPEC)
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in case.argv]

    outcome = run_cli(argv, capsys)

    assert outcome.code == case.code, outcome.text
    assert "Traceback" not in outcome.text
    for text in case.says:
        assert text.replace("{tmp}", str(tmp_path)) in outcome.text
    for text in case.never:
        assert text not in outcome.text
    if case.one_line:
        assert len(outcome.error_lines) == 1, outcome.err


def test_debug_shows_the_error_itself(cli_home: Path) -> None:
    argv = ["quota", "set-quota", "nobody", "--pool", "nopool", "--nominal", "2"]
    with pytest.raises(CapacityError, match="pool 'nopool' is not registered"):
        main(["--debug", *argv])
    # Given after the sub-command's name, too.
    with pytest.raises(CapacityError, match="pool 'nopool' is not registered"):
        main([*argv, "--debug"])


def test_every_parser_has_plain_help() -> None:
    parsers = [build_parser()]
    checked = 0
    while parsers:
        parser = parsers.pop()
        text = parser.format_help()
        assert "``" not in text and ":class:" not in text, parser.prog
        assert "--debug" in text, parser.prog
        checked += 1
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
    assert checked >= 12


def test_plain_text_keeps_the_words_of_rst_markup() -> None:
    text = (
        "Run ``nuro-ml quota`` (see :class:`~nuro_ml.capacity.ledger.QuotaLedger`, :ref:`the guide <howto>`)."
    )
    assert plain_text(text) == "Run nuro-ml quota (see QuotaLedger, the guide)."


def test_os_errors_name_the_path_and_what_to_do() -> None:
    err = PermissionError(errno.EACCES, "Permission denied", "/data/raw")
    assert describe_os_error(err) == (
        "cannot use /data/raw: Permission denied; choose a location you may write to, or fix its permissions"
    )
    refused = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    assert describe_os_error(refused) == "ConnectionRefusedError: [Errno 111] Connection refused"


@pytest.mark.parametrize("value", ["0", "-2", "nan", "inf", "two"])
def test_range_types_name_the_accepted_range(value: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="give a finite number greater than 0"):
        positive_float(value)
    assert positive_float("0.5") == 0.5
