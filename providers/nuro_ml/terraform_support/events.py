"""Turn Terraform's machine-readable UI stream (``-json``) into readable task-log lines.

Every line Terraform prints with ``-json`` is one JSON object with ``@level``, ``@message`` and a
``type`` (``planned_change``, ``apply_start``, ``provision_progress``, ``diagnostic``, ...). The collector
keeps what a caller needs afterwards (diagnostics, the change summary, outputs) and renders each event
as a single line, so a Terraform run reads in the Airflow task log like Terraform's own console output.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nuro_ml.terraform_support.diagnostics import Diagnostic, Severity

_LEVELS = {
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "debug": logging.DEBUG,
}


@dataclass(frozen=True)
class LogLine:
    """A rendered event: the logging level and the text to log."""

    level: int
    text: str


def _resource_addr(event: Mapping[str, Any]) -> str:
    hook = event.get("hook") or event.get("change") or {}
    resource = hook.get("resource") or {}
    return str(resource.get("addr", ""))


def _format_outputs(outputs: Mapping[str, Any]) -> str:
    if not outputs:
        return "Outputs: none"
    parts = []
    for name in sorted(outputs):
        meta = outputs[name] or {}
        if meta.get("sensitive"):
            parts.append(f"{name} = (sensitive)")
        elif "value" in meta:
            parts.append(f"{name} = {json.dumps(meta['value'])}")
        else:
            parts.append(f"{name} = (known after apply)")
    return "Outputs: " + ", ".join(parts)


def format_event(event: Mapping[str, Any]) -> LogLine | None:
    """Render one JSON UI event; ``None`` for events that carry nothing worth a log line."""
    kind = event.get("type")
    level = _LEVELS.get(str(event.get("@level", "info")), logging.INFO)
    message = str(event.get("@message", ""))
    if kind == "version":
        return LogLine(logging.DEBUG, message)
    if kind == "diagnostic":
        diagnostic = Diagnostic.from_json(event.get("diagnostic") or {})
        level = logging.ERROR if diagnostic.severity is Severity.ERROR else logging.WARNING
        return LogLine(level, diagnostic.format())
    if kind == "provision_progress":
        hook = event.get("hook") or {}
        return LogLine(
            level,
            f"{_resource_addr(event)} ({hook.get('provisioner', 'provisioner')}): "
            f"{str(hook.get('output', '')).rstrip()}",
        )
    if kind == "outputs":
        return LogLine(level, _format_outputs(event.get("outputs") or {}))
    if kind == "apply_errored":
        return LogLine(logging.ERROR, message)
    if not message:
        return None
    return LogLine(level, message)


@dataclass
class EventCollector:
    """Accumulates what a run reported while its events are being logged."""

    diagnostics: list[Diagnostic] = field(default_factory=list)
    change_summary: dict[str, Any] | None = None
    outputs: dict[str, Any] | None = None
    planned_changes: dict[str, str] = field(default_factory=dict)
    #: Address -> action for objects Terraform found changed outside Terraform while refreshing.
    drifted: dict[str, str] = field(default_factory=dict)
    non_json: list[str] = field(default_factory=list)

    def feed(self, raw: str) -> LogLine | None:
        """Record one stdout line and return how to log it."""
        stripped = raw.strip()
        if not stripped:
            return None
        try:
            event = json.loads(stripped)
        except json.JSONDecodeError:
            # Terraform writes a few messages as text even in -json mode (e.g. failures to read a plan).
            self.non_json.append(stripped)
            return LogLine(logging.INFO, stripped)
        if not isinstance(event, dict):
            self.non_json.append(stripped)
            return LogLine(logging.INFO, stripped)
        kind = event.get("type")
        if kind == "diagnostic":
            self.diagnostics.append(Diagnostic.from_json(event.get("diagnostic") or {}))
        elif kind == "change_summary":
            self.change_summary = dict(event.get("changes") or {})
        elif kind == "outputs":
            self.outputs = dict(event.get("outputs") or {})
        elif kind == "planned_change":
            change = event.get("change") or {}
            self.planned_changes[_resource_addr(event)] = str(change.get("action", ""))
        elif kind == "resource_drift":
            change = event.get("change") or {}
            self.drifted[_resource_addr(event)] = str(change.get("action", ""))
        return format_event(event)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity is Severity.ERROR]
