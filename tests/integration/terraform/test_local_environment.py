"""terraform/environments/local end to end: a real Ray head is provisioned, answers, and is destroyed."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest
from nuro_ml import settings
from nuro_ml.hooks.terraform import TerraformHook
from nuro_ml.operators.terraform import (
    TerraformApplyOperator,
    TerraformDestroyOperator,
    TerraformDriftCheckOperator,
    TerraformPlanOperator,
)
from nuro_ml.terraform_support.approval import approval_actions, changes_needing_approval
from nuro_ml.terraform_support.plan import PlanSummary

from tests.fixtures.services import free_port
from tests.integration.terraform.conftest import context_for, state_of

pytestmark = pytest.mark.integration

LOCAL_ENV = settings.terraform_dir() / "environments" / "local"
ENVIRONMENT = "local-roundtrip"


def session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes of a session, read from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def head_settings():
    runtime_dir = Path(tempfile.mkdtemp(prefix="nuro-tfrt-", dir="/tmp"))
    variables = {
        "num_gpus": 3,
        "num_cpus": 2,
        "ray_port": free_port(),
        "dashboard_port": free_port(),
        "python": sys.executable,
        "runtime_dir": str(runtime_dir),
        "object_store_memory_mb": 128,
    }
    yield variables
    # Whatever happened in the test, leave no Ray head and no state behind.
    record = runtime_dir / "ray-head.json"
    if state_of(ENVIRONMENT) and state_of(ENVIRONMENT)["resources"]:  # type: ignore[index]
        with TerraformHook(working_dir=LOCAL_ENV, environment=ENVIRONMENT, variables=variables) as hook:
            hook.destroy()
    if record.exists():
        sid = json.loads(record.read_text())["pid"]
        for pid in session_members(sid):
            os.kill(pid, signal.SIGKILL)


def test_plan_apply_check_destroy_round_trip(head_settings, caplog):
    caplog.set_level(logging.INFO, logger="nuro_ml.terraform")
    common = {"working_dir": str(LOCAL_ENV), "environment": ENVIRONMENT, "variables": head_settings}
    ray_port, dashboard_port = head_settings["ray_port"], head_settings["dashboard_port"]

    plan = TerraformPlanOperator(task_id="plan", **common).execute(context_for("plan"))
    assert plan["summary"]["add"] == ["null_resource.ray_head"]
    assert plan["has_changes"] and Path(plan["plan_file"]).is_file()

    outputs = TerraformApplyOperator(task_id="apply", plan_file=plan["plan_file"], **common).execute(
        context_for("apply")
    )

    # The task log counts the resources as Terraform's -json stream reports them done.
    assert any(
        re.fullmatch(rf"terraform apply {ENVIRONMENT}: 1/1 resources \(100%\) in \S+, \S+ resources/\w+", m)
        for m in caplog.messages
    ), caplog.messages
    assert outputs["ray_address"] == f"127.0.0.1:{ray_port}"
    assert outputs["dashboard_url"] == f"http://127.0.0.1:{dashboard_port}"
    assert outputs["gpu_count"] == 3
    assert not Path(plan["plan_file"]).exists(), "an applied plan (it holds variable values) is removed"
    with urllib.request.urlopen(f"{outputs['dashboard_url']}/api/jobs/", timeout=10) as response:
        assert response.status == 200 and json.loads(response.read()) == []
    from ray.util.state import list_nodes

    nodes = list_nodes(address=outputs["dashboard_url"], detail=True)
    assert len(nodes) == 1 and nodes[0].resources_total["GPU"] == 3 and nodes[0].resources_total["CPU"] == 2
    record = json.loads((Path(head_settings["runtime_dir"]) / "ray-head.json").read_text())
    assert record["ready"] and session_members(record["pid"])

    drift = TerraformDriftCheckOperator(task_id="drift", **common).execute(context_for("drift"))
    assert drift["drift"] is False and drift["summary"]["has_changes"] is False

    # Changing the GPU count replaces (restarts) the head, which the default approval gate catches.
    resize = TerraformPlanOperator(
        task_id="resize", **{**common, "variables": {**head_settings, "num_gpus": 4}}
    )
    resized = resize.execute(context_for("resize"))
    assert resized["summary"]["replace"] == ["null_resource.ray_head"]
    assert changes_needing_approval(PlanSummary.from_dict(resized["summary"]), approval_actions(True)) == [
        "replace null_resource.ray_head"
    ]
    Path(resized["plan_file"]).unlink()

    destroyed = TerraformDestroyOperator(task_id="destroy", **common).execute(context_for("destroy"))

    assert destroyed == {"destroyed": ["null_resource.ray_head"], "count": 1}
    assert any(
        re.fullmatch(rf"terraform destroy {ENVIRONMENT}: 1/1 resources \(100%\) in \S+, \S+ resources/\w+", m)
        for m in caplog.messages
    ), caplog.messages
    assert session_members(record["pid"]) == []
    assert not port_open(ray_port) and not port_open(dashboard_port)
    state = state_of(ENVIRONMENT)
    assert state is not None and state["resources"] == []
    # Destroy is idempotent: a second teardown finds nothing and succeeds.
    again = TerraformDestroyOperator(task_id="destroy", **common).execute(context_for("destroy"))
    assert again == {"destroyed": [], "count": 0}
