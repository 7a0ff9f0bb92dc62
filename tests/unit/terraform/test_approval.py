"""The approval gate between a Terraform plan and its apply."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.standard.exceptions import HITLTimeoutError
from airflow.sdk import DAG, TriggerRule
from nuro_ml.exceptions import TerraformError
from nuro_ml.operators.terraform import (
    TerraformApplyOperator,
    TerraformApprovalBranchOperator,
    TerraformPlanApprovalOperator,
    TerraformPlanOperator,
    terraform_plan_and_apply,
)
from nuro_ml.terraform_support.approval import approval_actions, changes_needing_approval
from nuro_ml.terraform_support.plan import ChangeAction, PlanSummary

from tests.unit.terraform.conftest import load_json

CREATE_ONLY = {
    "add": ["null_resource.ray_head"],
    "change": [],
    "replace": [],
    "destroy": [],
    "read": [],
    "outputs": {},
    "drift": [],
    "has_changes": True,
}
REPLACES_HEAD = {**CREATE_ONLY, "add": [], "replace": ["null_resource.ray_head"]}
DESTROYS = {**CREATE_ONLY, "add": [], "destroy": ["aws_eks_node_group.gpu"]}
UPDATES = {**CREATE_ONLY, "add": [], "change": ["aws_eks_node_group.gpu"]}


class _TaskInstance:
    """Just enough of a running task instance for choose_branch: the plan task's XCom."""

    def __init__(self, xcoms):
        self.xcoms = xcoms

    def xcom_pull(self, task_ids):
        return self.xcoms.get(task_ids)


def _context(ti: _TaskInstance) -> Any:
    return {"ti": ti}


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        (("delete", "replace"), {ChangeAction.DELETE, ChangeAction.REPLACE}),
        (True, {ChangeAction.DELETE, ChangeAction.REPLACE}),
        (False, set()),
        (None, set()),
        ((), set()),
        ("update", {ChangeAction.UPDATE}),
        (["destroy", "create"], {ChangeAction.DELETE, ChangeAction.CREATE}),
    ],
)
def test_approval_settings(setting, expected):
    assert approval_actions(setting) == expected


def test_real_plan_with_destroy_and_replace_needs_approval():
    summary = PlanSummary.from_show_json(load_json("show_plan_changes.json"))

    assert changes_needing_approval(summary, approval_actions(("delete", "replace"))) == [
        "delete null_resource.remove_me",
        "replace null_resource.replace_me",
    ]
    assert changes_needing_approval(summary, approval_actions(False)) == []
    assert changes_needing_approval(summary, approval_actions("update")) == []


@pytest.mark.parametrize(
    ("summary", "require", "branch"),
    [
        (CREATE_ONLY, ("delete", "replace"), "tf.apply"),
        (REPLACES_HEAD, ("delete", "replace"), "tf.approve"),
        (DESTROYS, ("delete", "replace"), "tf.approve"),
        (UPDATES, ("delete", "replace"), "tf.apply"),
        (UPDATES, ("update",), "tf.approve"),
        (DESTROYS, (), "tf.apply"),
    ],
)
def test_branch_routes_by_planned_actions(summary, require, branch):
    operator = TerraformApprovalBranchOperator(
        task_id="needs_approval",
        plan_task_id="tf.plan",
        approval_task_id="tf.approve",
        apply_task_id="tf.apply",
        require_approval_for=require,
    )
    context: Any = {"ti": _TaskInstance({"tf.plan": {"plan_file": "/p", "summary": summary}})}

    assert operator.choose_branch(context) == branch


def test_branch_without_plan_summary_fails_clearly():
    operator = TerraformApprovalBranchOperator(
        task_id="needs_approval",
        plan_task_id="tf.plan",
        approval_task_id="a",
        apply_task_id="b",
    )

    with pytest.raises(TerraformError, match=r"task 'tf\.plan' pushed no Terraform plan summary"):
        operator.choose_branch(_context(_TaskInstance({})))


def test_typo_in_gated_actions_fails_at_parse_time():
    with pytest.raises(TerraformError, match="destory"):
        TerraformApprovalBranchOperator(
            task_id="x",
            plan_task_id="p",
            approval_task_id="a",
            apply_task_id="b",
            require_approval_for=("destory",),
        )


def test_factory_wires_plan_gate_approval_and_apply():
    with DAG("tf_gate", schedule=None, start_date=datetime(2024, 1, 1)) as dag:
        group = terraform_plan_and_apply(
            group_id="infra",
            working_dir="/repo/terraform/environments/local",
            variables={"num_gpus": 2},
            workspace="team-a",
            approval_timeout=timedelta(hours=4),
        )

    assert set(group.children) == {"infra.plan", "infra.needs_approval", "infra.approve", "infra.apply"}
    plan, branch = dag.get_task("infra.plan"), dag.get_task("infra.needs_approval")
    approve, apply = dag.get_task("infra.approve"), dag.get_task("infra.apply")
    assert isinstance(plan, TerraformPlanOperator) and isinstance(apply, TerraformApplyOperator)
    assert isinstance(approve, TerraformPlanApprovalOperator)
    assert isinstance(branch, TerraformApprovalBranchOperator)
    assert approve.plan_task_id == "infra.plan"
    assert plan.downstream_task_ids == {"infra.needs_approval"}
    assert branch.downstream_task_ids == {"infra.approve", "infra.apply"}
    assert approve.downstream_task_ids == {"infra.apply"}
    # Branching to the approval must not skip the apply: it is downstream of the approval.
    assert "infra.apply" in approve.get_flat_relative_ids(upstream=False)
    assert apply.trigger_rule == TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS
    assert apply.plan_file == "{{ ti.xcom_pull(task_ids='infra.plan')['plan_file'] }}"
    assert approve.body == "{{ ti.xcom_pull(task_ids='infra.plan')['report'] }}"
    plan_xcom = {"environment": "local", "workspace": "team-a"}
    subject = approve.render_template(approve.subject, _context(_TaskInstance({"infra.plan": plan_xcom})))
    assert subject == "Apply Terraform plan for local/team-a?"
    assert approve.response_timeout == timedelta(hours=4)
    assert plan.workspace == apply.workspace == "team-a"
    assert plan.variables == apply.variables == {"num_gpus": 2}
    assert branch.plan_task_id == "infra.plan"


def test_factory_without_approval_is_plan_then_apply():
    with DAG("tf_nogate", schedule=None, start_date=datetime(2024, 1, 1)) as dag:
        terraform_plan_and_apply(group_id="infra", working_dir="/env", require_approval_for=False)

    assert set(dag.task_ids) == {"infra.plan", "infra.apply"}
    assert dag.get_task("infra.plan").downstream_task_ids == {"infra.apply"}


def _response(*chosen: str) -> dict[str, Any]:
    return {
        "chosen_options": list(chosen),
        "params_input": {},
        "responded_at": datetime(2026, 1, 1, tzinfo=UTC),
        "responded_by_user": {"id": "admin", "name": "admin"},
    }


@pytest.fixture
def saved_plan(tmp_path: Path) -> Path:
    plan_file = tmp_path / "plans" / "apply.tfplan"
    plan_file.parent.mkdir()
    plan_file.write_bytes(b"plan with variable values")
    return plan_file


def _approval(plan_file: Path) -> tuple[TerraformPlanApprovalOperator, Any]:
    operator = TerraformPlanApprovalOperator(task_id="approve", plan_task_id="tf.plan", subject="Apply?")
    return operator, _context(_TaskInstance({"tf.plan": {"plan_file": str(plan_file)}}))


def test_approved_plan_is_kept_for_the_apply(saved_plan):
    operator, context = _approval(saved_plan)

    result = operator.execute_complete(context, _response("Approve"))

    assert result["chosen_options"] == ["Approve"]
    assert saved_plan.read_bytes() == b"plan with variable values"


def test_rejected_plan_is_removed(saved_plan):
    operator, context = _approval(saved_plan)

    result = operator.execute_complete(context, _response("Reject"))

    assert result["chosen_options"] == ["Reject"]
    assert not saved_plan.exists()
    assert saved_plan.parent.is_dir()


def test_plan_is_removed_when_nobody_answers_in_time(saved_plan):
    operator, context = _approval(saved_plan)
    event = {"error": "no response within 4h", "error_type": "timeout"}

    with pytest.raises(HITLTimeoutError):
        operator.execute_complete(context, event)

    assert not saved_plan.exists()


def test_rejection_without_a_saved_plan_still_completes(tmp_path):
    operator, context = _approval(tmp_path / "already-gone.tfplan")
    nothing_pushed = _context(_TaskInstance({}))

    assert operator.execute_complete(context, _response("Reject"))["chosen_options"] == ["Reject"]
    assert operator.execute_complete(nothing_pushed, _response("Reject"))["chosen_options"] == ["Reject"]
