"""Terraform diagnostics (errors and warnings) as typed values with ``file:line`` locations.

Commands that speak JSON (``plan``/``apply -json``, ``validate -json``) report diagnostics as objects;
``init`` and ``workspace`` only print them as text, in the shape::

    Error: Unsupported argument

      on main.tf line 3, in resource "null_resource" "x":
       3:   bogus = 1

    An argument named "bogus" is not expected here.

Both forms are parsed into :class:`Diagnostic` so that errors read the same whatever command failed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_BOX = re.compile(r"^[╷│╵] ?")
_HEADER = re.compile(r"^(Error|Warning): (.*)$")
_LOCATION = re.compile(r"^\s*on (?P<file>.+?) line (?P<line>\d+)(?:, in (?P<context>.*))?:\s*$")
_SNIPPET = re.compile(r"^\s*\d+:\s")


class Severity(StrEnum):
    """How bad a diagnostic is."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Diagnostic:
    """One Terraform diagnostic, located in a configuration file when Terraform says where."""

    severity: Severity
    summary: str
    detail: str = ""
    filename: str | None = None
    line: int | None = None
    column: int | None = None
    code: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.severity, Severity):
            object.__setattr__(self, "severity", Severity(str(self.severity).lower()))

    @property
    def location(self) -> str | None:
        """``file:line`` (or ``file:line:column``) when known."""
        if not self.filename:
            return None
        if self.line is None:
            return self.filename
        if self.column is None:
            return f"{self.filename}:{self.line}"
        return f"{self.filename}:{self.line}:{self.column}"

    def format(self) -> str:
        """One readable block: ``main.tf:3:3: Error: summary`` then the detail and offending code."""
        head = f"{self.severity.value.capitalize()}: {self.summary}"
        if self.location:
            head = f"{self.location}: {head}"
        parts = [head]
        if self.code:
            parts.append(f"    {self.line}: {self.code.strip()}" if self.line else f"    {self.code.strip()}")
        if self.detail:
            parts.append(self.detail.strip())
        return "\n".join(parts)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Diagnostic:
        """Build from Terraform's JSON diagnostic object (``-json`` views and ``validate -json``)."""
        rng = raw.get("range") or {}
        start = rng.get("start") or {}
        snippet = raw.get("snippet") or {}
        return cls(
            severity=Severity(str(raw.get("severity", "error")).lower()),
            summary=str(raw.get("summary", "")),
            detail=str(raw.get("detail") or ""),
            filename=rng.get("filename"),
            line=start.get("line"),
            column=start.get("column"),
            code=snippet.get("code"),
        )


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def parse_text_diagnostics(text: str) -> list[Diagnostic]:
    """Parse ``Error:``/``Warning:`` blocks from Terraform's human-readable output."""
    diagnostics: list[Diagnostic] = []
    current: dict[str, Any] | None = None
    detail: list[str] = []

    def flush() -> None:
        if current is not None:
            current["detail"] = "\n".join(detail).strip()
            diagnostics.append(Diagnostic(**current))

    for raw_line in strip_ansi(text).splitlines():
        line = _BOX.sub("", raw_line.rstrip())
        header = _HEADER.match(line.strip())
        if header:
            flush()
            current = {"severity": Severity(header.group(1).lower()), "summary": header.group(2).strip()}
            detail = []
            continue
        if current is None:
            continue
        location = _LOCATION.match(line)
        if location and "filename" not in current:
            current["filename"] = location.group("file")
            current["line"] = int(location.group("line"))
            continue
        if _SNIPPET.match(line) and "code" not in current and "filename" in current:
            current["code"] = line.split(":", 1)[1]
            continue
        detail.append(line)
    flush()
    return diagnostics


def errors_only(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    return [d for d in diagnostics if d.severity is Severity.ERROR]


def format_diagnostics(diagnostics: Iterable[Diagnostic]) -> str:
    return "\n\n".join(d.format() for d in diagnostics)
