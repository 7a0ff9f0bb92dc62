"""Change summaries parsed from real ``terraform show -json`` plans (see data/make_fixtures.py)."""

from __future__ import annotations

import json

import pytest
from nuro_ml.exceptions import TerraformError
from nuro_ml.terraform_support.plan import ChangeAction, PlanSummary, normalise_actions


def test_summary_lists_every_changed_address_by_action(show_changes):
    summary = PlanSummary.from_show_json(show_changes)

    assert summary.add == ["null_resource.add_me", "null_resource.pool[2]"]
    assert summary.replace == ["null_resource.replace_me"]
    assert summary.destroy == ["null_resource.remove_me"]
    assert summary.change == []
    assert summary.has_changes
    assert summary.describe() == "2 to add, 0 to change, 1 to replace, 1 to destroy"
    assert summary.actions == {ChangeAction.CREATE, ChangeAction.REPLACE, ChangeAction.DELETE}


def test_unchanged_resources_are_not_reported_as_changes(show_changes):
    summary = PlanSummary.from_show_json(show_changes)
    unchanged = summary.addresses(ChangeAction.NO_OP)

    assert unchanged == ["null_resource.keep", "null_resource.pool[0]", "null_resource.pool[1]"]
    for address in unchanged:
        assert address not in summary.to_dict()["add"] + summary.to_dict()["replace"]


def test_empty_plan_has_no_changes(show_no_changes):
    summary = PlanSummary.from_show_json(show_no_changes)

    assert not summary.has_changes
    assert summary.to_dict()["add"] == summary.to_dict()["destroy"] == []
    assert "No changes." in summary.markdown()


def test_xcom_dict_carries_no_values_from_the_plan(show_changes):
    # show -json holds variable values and the sensitive output's value in clear text.
    assert "fixture-token-value" in json.dumps(show_changes)

    pushed = json.dumps(PlanSummary.from_show_json(show_changes).to_dict())

    assert "fixture-token-value" not in pushed
    assert json.loads(pushed)["outputs"] == {"kept": "no-op", "secret": "create"}


def test_round_trip_through_xcom_dict(show_changes):
    summary = PlanSummary.from_show_json(show_changes)
    restored = PlanSummary.from_dict(json.loads(json.dumps(summary.to_dict())))

    assert restored.to_dict() == summary.to_dict()
    assert restored.replace == ["null_resource.replace_me"]


def test_in_place_update_is_a_change_not_a_replacement():
    document = {
        "format_version": "0.2",
        "resource_changes": [
            {
                "address": "aws_eks_node_group.gpu",
                "type": "aws_eks_node_group",
                "change": {"actions": ["update"]},
            },
            {
                "address": "module.net.aws_vpc.this",
                "module_address": "module.net",
                "type": "aws_vpc",
                "change": {"actions": ["create", "delete"]},
            },
        ],
    }
    summary = PlanSummary.from_show_json(document)

    assert summary.change == ["aws_eks_node_group.gpu"]
    # create-before-destroy replacements are replacements too.
    assert summary.replace == ["module.net.aws_vpc.this"]


def test_markdown_names_what_will_be_destroyed(show_changes):
    report = PlanSummary.from_show_json(show_changes).markdown(title="Plan for local")

    assert report.startswith("**Plan for local:** 2 to add, 0 to change, 1 to replace, 1 to destroy")
    assert "- `null_resource.remove_me`" in report
    assert report.index("Destroy") < report.index("null_resource.remove_me") < report.index("Replace")


def test_unknown_action_list_is_an_error():
    with pytest.raises(TerraformError, match="unrecognised Terraform change actions"):
        ChangeAction.from_actions(["delete", "update"])


def test_not_a_plan_document_is_rejected():
    with pytest.raises(TerraformError, match="format_version"):
        PlanSummary.from_show_json({"values": {}})


def test_action_names_accept_synonyms_and_reject_typos():
    assert normalise_actions(["destroy", "REPLACE", "change"]) == {
        ChangeAction.DELETE,
        ChangeAction.REPLACE,
        ChangeAction.UPDATE,
    }
    with pytest.raises(TerraformError, match="destory"):
        normalise_actions(["destory"])
