"""Rendering Terraform's JSON UI events (recorded from real runs) as task-log lines."""

from __future__ import annotations

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
