"""A Terraform plan that replaces a resource waits for a person's decision in the Airflow UI.

The ``terraform_approval`` DAG (``dags/terraform_approval.py``) runs
:func:`~nuro_ml.operators.terraform.terraform_plan_and_apply` on a null-provider configuration whose
``null_resource.gate`` is replaced whenever the run's ``trigger`` param changes. Each test owns its
configuration directory and local state. An admin opens the approve task's "Required Actions" page,
reads the plan report and clicks Approve or Reject; the test then checks what a user would: task
states, the run's outcome, the plan summary in XCom and the Terraform state itself.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from nuro_ml.hooks.terraform import TerraformHook

from tests.fixtures.airflow_stack import AirflowStack
from tests.stack.browser.conftest import login, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]

HERE = Path(__file__).resolve().parent
DAG_FILE = HERE / "dags" / "terraform_approval.py"
CONFIG = HERE / "terraform" / "gate"
DAG_ID = "terraform_approval"
PLAN, GATE, APPROVE, APPLY = "infra.plan", "infra.needs_approval", "infra.approve", "infra.apply"
RESOURCE = "null_resource.gate"


@dataclass
class Environment:
    """One Terraform configuration and its local state, private to a test."""

    working_dir: Path
    state_dir: Path

    @property
    def state_file(self) -> Path:
        return self.state_dir / "terraform.tfstate"

    def params(self, trigger: str) -> dict[str, str]:
        return {"working_dir": str(self.working_dir), "state_dir": str(self.state_dir), "trigger": trigger}

    def gate(self) -> dict[str, Any] | None:
        """``null_resource.gate`` as the state records it (id and triggers), or None."""
        if not self.state_file.exists():
            return None
        state = json.loads(self.state_file.read_text())
        for resource in state["resources"]:
            if (resource["type"], resource["name"]) == ("null_resource", "gate"):
                attributes = resource["instances"][0]["attributes"]
                return {"id": attributes["id"], "triggers": attributes["triggers"]}
        return None

    def create(self, trigger: str, scratch: Path) -> dict[str, Any]:
        """Bring the environment up as an earlier deployment left it."""
        with TerraformHook(
            working_dir=self.working_dir,
            variables={"trigger": trigger},
            backend_config={"path": str(self.state_file)},
            state_root=scratch,
        ) as hook:
            hook.apply()
        gate = self.gate()
        assert gate is not None and gate["triggers"] == {"trigger": trigger}
        return gate


@pytest.fixture(scope="module")
def stack(airflow_stack: AirflowStack) -> AirflowStack:
    airflow_stack.add_dag_files([DAG_FILE])
    airflow_stack.wait_for_dags([DAG_ID])
    return airflow_stack


@pytest.fixture
def environment(tmp_path: Path) -> Environment:
    # The directory name is the Terraform environment (it keys saved plans): unique per test.
    working_dir = tmp_path / f"gate-{uuid.uuid4().hex[:8]}"
    shutil.copytree(CONFIG, working_dir)
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    return Environment(working_dir=working_dir, state_dir=state_dir)


def trigger_run(stack: AirflowStack, environment: Environment, trigger: str) -> str:
    run_id = f"manual__{trigger}_{uuid.uuid4().hex[:8]}"
    response = stack.api(
        "POST",
        f"/api/v2/dags/{DAG_ID}/dagRuns",
        json_body={"dag_run_id": run_id, "logical_date": None, "conf": environment.params(trigger)},
    )
    assert response.status_code == 200, response.text
    return run_id


def respond_in_ui(
    stack: AirflowStack, environment: Environment, browser_context: Any, run_id: str, choice: str
) -> None:
    """Open the approve task's Required Actions page as admin, check the report, click ``choice``."""
    page = login(browser_context, stack, "admin")
    page.goto(
        f"{stack.base_url}/dags/{DAG_ID}/runs/{quote(run_id, safe='')}/tasks/{APPROVE}/required_actions"
    )
    button = page.get_by_role("button", name=choice, exact=True)
    button.wait_for()
    # The request names the environment, and its body is the plan report: what is about to be replaced.
    page.get_by_text(RESOURCE).first.wait_for()
    text = page.inner_text("body")
    assert f"Apply Terraform plan for {environment.working_dir.name}/default?" in text
    assert "Replace (destroy, then create)" in text
    screenshot(page, f"terraform-approval-{choice.lower()}-pending")
    button.click()
    page.get_by_text(f"{APPROVE} response successful").first.wait_for()
    screenshot(page, f"terraform-approval-{choice.lower()}-sent")


def wait_for_scheduler_to_see_the_pause(stack: AirflowStack, run_id: str, timeout: float = 120.0) -> None:
    """Wait until the scheduler has processed the executor's event for the paused approval try.

    Airflow 3.3 races a response given before that: the late event finds the task already queued
    again by the response and fails it ("finished with state success, but the task instance's
    state attribute is queued"). A reviewer never answers within the scheduler's loop; the test,
    driving the browser at once, has to wait for it the way a person does by being slower.
    """
    scheduler = stack.daemon("scheduler")
    marker = f"TaskInstance Finished: dag_id={DAG_ID}, task_id={APPROVE}, run_id={run_id},"
    deadline = time.monotonic() + timeout
    while marker not in scheduler.log.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise AssertionError(f"the scheduler never processed the paused {APPROVE} of {run_id}")
        stack.check_alive()
        time.sleep(0.5)


def wait_for_decision(stack: AirflowStack, environment: Environment, run_id: str) -> dict[str, Any]:
    """Wait until the replace plan's approval request is pending; check nothing was applied yet."""
    stack.wait_for_task(DAG_ID, run_id, APPROVE, "awaiting_input")
    wait_for_scheduler_to_see_the_pause(stack, run_id)
    states = stack.task_states(DAG_ID, run_id)
    assert (states[PLAN], states[GATE], states[APPLY]) == ("success", "success", None), states
    run = stack.get_json(f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}")
    assert run["state"] == "running"
    plan = stack.xcom(DAG_ID, run_id, PLAN)
    assert plan["has_changes"] is True
    assert (plan["summary"]["replace"], plan["summary"]["add"], plan["summary"]["destroy"]) == (
        [RESOURCE],
        [],
        [],
    )
    assert Path(plan["plan_file"]).is_file()
    details = stack.get_json(
        f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances/{APPROVE}/-1/hitlDetails"
    )
    assert details["response_received"] is False
    assert details["options"] == ["Approve", "Reject"]
    assert RESOURCE in details["body"]
    return dict(plan)


def test_additions_only_apply_without_waiting(stack: AirflowStack, environment: Environment) -> None:
    run_id = trigger_run(stack, environment, "first")

    run = stack.wait_for_run(DAG_ID, run_id, timeout=300)

    states = stack.task_states(DAG_ID, run_id)
    assert run["state"] == "success", states
    assert states == {PLAN: "success", GATE: "success", APPROVE: "skipped", APPLY: "success"}
    plan = stack.xcom(DAG_ID, run_id, PLAN)
    assert plan["summary"]["add"] == [RESOURCE]
    assert plan["summary"]["replace"] == plan["summary"]["destroy"] == []
    gate = environment.gate()
    assert gate is not None and gate["triggers"] == {"trigger": "first"}
    assert stack.xcom(DAG_ID, run_id, APPLY) == {"gate_id": gate["id"]}
    # The reviewed plan held variable values; it is gone once applied.
    assert not Path(plan["plan_file"]).exists()


def test_approved_replacement_is_applied(
    stack: AirflowStack, environment: Environment, browser_context: Any, tmp_path: Path
) -> None:
    before = environment.create("first", tmp_path / "scratch")
    run_id = trigger_run(stack, environment, "second")

    plan = wait_for_decision(stack, environment, run_id)
    assert environment.gate() == before
    respond_in_ui(stack, environment, browser_context, run_id, "Approve")
    run = stack.wait_for_run(DAG_ID, run_id, timeout=300)

    states = stack.task_states(DAG_ID, run_id)
    assert run["state"] == "success", states
    assert states == {PLAN: "success", GATE: "success", APPROVE: "success", APPLY: "success"}
    after = environment.gate()
    assert after is not None
    assert after["triggers"] == {"trigger": "second"}
    assert after["id"] != before["id"]
    assert stack.xcom(DAG_ID, run_id, APPLY) == {"gate_id": after["id"]}
    details = stack.get_json(
        f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances/{APPROVE}/-1/hitlDetails"
    )
    assert details["chosen_options"] == ["Approve"]
    assert details["responded_by_user"]["name"] == "admin"
    assert not Path(plan["plan_file"]).exists()


def test_rejected_replacement_changes_nothing(
    stack: AirflowStack, environment: Environment, browser_context: Any, tmp_path: Path
) -> None:
    before = environment.create("first", tmp_path / "scratch")
    state_before = environment.state_file.read_bytes()
    run_id = trigger_run(stack, environment, "second")

    plan = wait_for_decision(stack, environment, run_id)
    respond_in_ui(stack, environment, browser_context, run_id, "Reject")
    run = stack.wait_for_run(DAG_ID, run_id, timeout=300)

    states = stack.task_states(DAG_ID, run_id)
    # A rejection is a decision, not an error: the gate succeeds and skips the apply.
    assert run["state"] == "success", states
    assert states == {PLAN: "success", GATE: "success", APPROVE: "success", APPLY: "skipped"}
    assert environment.gate() == before
    assert environment.state_file.read_bytes() == state_before
    details = stack.get_json(
        f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances/{APPROVE}/-1/hitlDetails"
    )
    assert details["chosen_options"] == ["Reject"]
    # The rejected plan (it holds the run's variable values) cannot be applied later.
    assert not Path(plan["plan_file"]).exists()
