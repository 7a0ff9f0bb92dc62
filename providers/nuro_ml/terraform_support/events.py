"""Turn Terraform's machine-readable UI stream (``-json``) into readable task-log lines.

Every line Terraform prints with ``-json`` is one JSON object with ``@level``, ``@message`` and a
``type`` (``planned_change``, ``apply_start``, ``provision_progress``, ``diagnostic``, ...). The collector
keeps what a caller needs afterwards (diagnostics, the change summary, outputs) and renders each event
as a single line, so a Terraform run reads in the Airflow task log like Terraform's own console output.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from nuro_ml.progress import Progress
from nuro_ml.terraform_support.diagnostics import Diagnostic, Severity

_LEVELS = {
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "debug": logging.DEBUG,
}

#: Planned actions that apply does nothing for (no ``apply_complete`` follows).
_NO_APPLY = frozenset({"noop", "no-op", "read"})
#: Events that move the resource count of an apply or destroy.
_PROGRESS_EVENTS = frozenset(
    {"apply_start", "apply_progress", "apply_complete", "apply_errored", "change_summary"}
)


@dataclass(frozen=True)
class LogLine:
    """A rendered event: the logging level and the text to log."""

    level: int
    text: str


def _resource_addr(event: Mapping[str, Any]) -> str:
    hook = event.get("hook") or event.get("change") or {}
    resource = hook.get("resource") or {}
    return str(resource.get("addr", ""))


def _event_time(event: Mapping[str, Any]) -> float | None:
    """Seconds since the epoch of an event's ``@timestamp`` (None when absent or unreadable)."""
    stamp = event.get("@timestamp")
    if not isinstance(stamp, str):
        return None
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return None


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
    #: Where resource progress lines go (``<what>: 3/5 resources (60%), ...``); None: not reported.
    on_progress: Callable[[str], None] | None = None
    #: Names the run in progress lines, e.g. ``terraform apply local``.
    what: str = "terraform"
    progress: Progress | None = field(default=None, init=False)
    #: Completion events each planned resource needs (a replacement is a delete and a create).
    _needed: dict[str, int] = field(default_factory=dict, init=False)
    _completed: dict[str, int] = field(default_factory=dict, init=False)
    _now: float = field(default_factory=time.time, init=False)

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
            action = str(change.get("action", ""))
            self.planned_changes[_resource_addr(event)] = action
            if action not in _NO_APPLY:
                self._needed[_resource_addr(event)] = 2 if action == "replace" else 1
        elif kind == "resource_drift":
            change = event.get("change") or {}
            self.drifted[_resource_addr(event)] = str(change.get("action", ""))
        if kind in _PROGRESS_EVENTS:
            self._track(kind, event)
        return format_event(event)

    def _track(self, kind: str, event: Mapping[str, Any]) -> None:
        """Count resources whose every planned step finished (or failed), for the progress line.

        Time is Terraform's own event time, so rate and ETA describe Terraform's work, not how fast
        its output reached us.
        """
        if self.on_progress is None:
            return
        stamp = _event_time(event)
        if stamp is not None:
            self._now = stamp
        if self.progress is None:
            if kind not in ("apply_start", "apply_progress"):
                return
            self.progress = Progress(
                self.what,
                len(self._needed) or None,
                unit="resources",
                emit=self.on_progress,
                clock=lambda: self._now,
            )
        if kind == "change_summary":
            if (event.get("changes") or {}).get("operation") != "plan":
                self.progress.finish()
            return
        if kind in ("apply_start", "apply_progress"):
            # A long create prints "Still creating..." every 10 s: a chance to refresh rate and ETA.
            if kind == "apply_progress":
                self.progress.update(self.progress.done)
            return
        addr = _resource_addr(event)
        self._completed[addr] = self._completed.get(addr, 0) + 1
        done = sum(1 for a, n in self._completed.items() if n >= self._needed.get(a, 1))
        if kind == "apply_errored":
            self.progress.update(done, force=True, failed=addr)
        else:
            self.progress.update(done)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity is Severity.ERROR]
