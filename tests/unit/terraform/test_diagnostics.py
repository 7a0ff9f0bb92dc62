"""Diagnostics from Terraform's text output (init) and JSON output."""

from __future__ import annotations

from nuro_ml.terraform_support.diagnostics import (
    Diagnostic,
    Severity,
    format_diagnostics,
    parse_text_diagnostics,
)

from tests.unit.terraform.conftest import DATA


def test_init_syntax_error_is_located():
    diagnostics = parse_text_diagnostics((DATA / "init_syntax_error.txt").read_text())

    assert len(diagnostics) == 1
    diagnostic = diagnostics[0]
    assert diagnostic.severity is Severity.ERROR
    assert diagnostic.summary == "Invalid expression"
    assert diagnostic.location == "main.tf:13"
    assert "Expected the start of an expression" in diagnostic.detail


def test_box_drawn_and_coloured_output_is_parsed():
    # Terraform draws boxes around diagnostics when it writes to a terminal.
    text = (
        "\x1b[31m╷\x1b[0m\n"
        "\x1b[31m│\x1b[0m \x1b[1mError: \x1b[0mUnsupported block type\n"
        "\x1b[31m│\x1b[0m\n"
        "\x1b[31m│\x1b[0m   on versions.tf line 4, in terraform:\n"
        "\x1b[31m│\x1b[0m    4:   bogus {}\n"
        "\x1b[31m│\x1b[0m\n"
        '\x1b[31m│\x1b[0m Blocks of type "bogus" are not expected here.\n'
        "\x1b[31m╵\x1b[0m\n"
        "Warning: Deprecated\n\nsomething old\n"
    )
    errors = parse_text_diagnostics(text)

    assert [(d.severity, d.summary, d.location) for d in errors] == [
        (Severity.ERROR, "Unsupported block type", "versions.tf:4"),
        (Severity.WARNING, "Deprecated", None),
    ]
    assert errors[0].code is not None and errors[0].code.strip() == "bogus {}"
    assert errors[0].detail == 'Blocks of type "bogus" are not expected here.'


def test_json_diagnostic_without_range_has_no_location():
    diagnostic = Diagnostic.from_json(
        {"severity": "error", "summary": "Error acquiring the state lock", "detail": "Lock Info:\n  ID: 1234"}
    )

    assert diagnostic.location is None
    assert diagnostic.format() == "Error: Error acquiring the state lock\nLock Info:\n  ID: 1234"


def test_format_joins_diagnostics_in_order():
    first = Diagnostic(Severity.ERROR, "A", filename="a.tf", line=1)
    second = Diagnostic("warning", "B")  # type: ignore[arg-type]

    assert second.severity is Severity.WARNING
    assert format_diagnostics([first, second]) == "a.tf:1: Error: A\n\nWarning: B"
