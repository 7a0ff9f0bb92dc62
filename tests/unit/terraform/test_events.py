"""Rendering Terraform's JSON UI events (recorded from real runs) as task-log lines."""

from __future__ import annotations

import json
import logging

from nuro_ml.terraform_support.events import EventCollector, format_event

from tests.unit.terraform.conftest import load_events


def _render(name: str) -> tuple[EventCollector, list[tuple[int, str]]]:
    collector = EventCollector()
    lines = []
    for raw in load_events(name):
        rendered = collector.feed(raw)
        if rendered is not None:
            lines.append((rendered.level, rendered.text))
    return collector, lines


def test_apply_reads_like_terraform_console_output():
    _, lines = _render("apply_changes_events.jsonl")
    texts = [text for level, text in lines if level >= logging.INFO]

    assert "null_resource.remove_me: Destroying... [id=2004948860989867277]" in texts
    assert "null_resource.replace_me: Plan to replace" in texts
    assert "null_resource.add_me (local-exec): provisioned-line" in texts
    assert "Apply complete! Resources: 3 added, 0 changed, 2 destroyed." in texts


def test_version_banner_is_debug_only():
    _, lines = _render("apply_create_events.jsonl")

    assert (logging.DEBUG, "Terraform 1.0.3") in lines
    assert all(level >= logging.INFO for level, text in lines if text != "Terraform 1.0.3")


def test_sensitive_output_value_never_rendered():
    collector, lines = _render("apply_changes_events.jsonl")
    rendered = "\n".join(text for _, text in lines)

    assert collector.outputs is not None and collector.outputs["secret"]["sensitive"] is True
    assert "fixture-token-value" not in rendered
    assert "secret = (sensitive)" in rendered
    assert 'kept = "2971659003581102282"' in rendered


def test_collector_keeps_change_summary_and_planned_actions():
    collector, _ = _render("apply_changes_events.jsonl")

    assert collector.change_summary == {"add": 3, "change": 0, "remove": 2, "operation": "apply"}
    assert collector.planned_changes == {
        "null_resource.remove_me": "delete",
        "null_resource.pool[2]": "create",
        "null_resource.add_me": "create",
        "null_resource.replace_me": "replace",
    }
    assert collector.errors == []


def test_error_diagnostic_is_logged_with_file_and_line():
    collector, lines = _render("plan_error_events.jsonl")

    assert [d.location for d in collector.errors] == ["main.tf:15:3"]
    level, text = lines[-1]
    assert level == logging.ERROR
    assert text.splitlines()[0] == "main.tf:15:3: Error: Unsupported argument"
    assert "bogus_argument = 1" in text
    assert 'An argument named "bogus_argument" is not expected here.' in text


def test_non_json_lines_are_kept_and_logged_as_text():
    collector = EventCollector()
    rendered = collector.feed("Terraform couldn't read the given file as a state or plan file.")

    assert rendered is not None and rendered.text.startswith("Terraform couldn't read")
    assert collector.non_json == ["Terraform couldn't read the given file as a state or plan file."]
    assert collector.feed("   ") is None


def test_outputs_not_known_until_apply():
    line = format_event(
        {
            "type": "outputs",
            "@level": "info",
            "@message": "Outputs: 1",
            "outputs": {"id": {"sensitive": False, "type": "string"}},
        }
    )

    assert line is not None and line.text == "Outputs: id = (known after apply)"


def _progress(name: str, spacing_s: float | None = None) -> list[str]:
    """Progress lines of a recorded run; with ``spacing_s`` its events are replayed that far apart."""
    lines: list[str] = []
    collector = EventCollector(on_progress=lines.append, what="terraform apply local")
    for i, raw in enumerate(load_events(name)):
        if spacing_s is not None:
            event = json.loads(raw)
            event["@timestamp"] = (
                f"2026-11-25T17:{int(i * spacing_s) // 60:02d}:{int(i * spacing_s) % 60:02d}Z"
            )
            raw = json.dumps(event)
        collector.feed(raw)
    return lines


def test_apply_reports_resources_done_with_rate_and_eta_from_terraform_time():
    # Recorded as it ran: 4 resources to change (a replacement counts once, when its create ends).
    assert _progress("apply_changes_events.jsonl") == [
        "terraform apply local: 4/4 resources (100%) in 0.0s, 150 resources/s",
    ]
    # The same events 20 s apart: each completion is a line, the ETA follows the pace; the
    # replaced resource is done only when its create ends.
    assert _progress("apply_changes_events.jsonl", spacing_s=20) == [
        "terraform apply local: 1/4 resources (25%), 1.5 resources/min, ETA 2m00s",
        "terraform apply local: 1/4 resources (25%), 0.6 resources/min, ETA 5m00s",
        "terraform apply local: 2/4 resources (50%), 1.0 resources/min, ETA 2m00s",
        "terraform apply local: 3/4 resources (75%), 0.8 resources/min, ETA 1m13s",
        "terraform apply local: 4/4 resources (100%), 0.9 resources/min",
        "terraform apply local: 4/4 resources (100%) in 4m40s, 0.9 resources/min",
    ]


def test_plan_alone_reports_no_resource_progress():
    lines: list[str] = []
    collector = EventCollector(on_progress=lines.append)
    for raw in load_events("plan_error_events.jsonl"):
        collector.feed(raw)
    assert lines == []
