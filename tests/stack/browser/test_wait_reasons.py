"""Why a GPU request waits, read where people look: the sensor's task log, ``nuro-ml quota show``
and the capacity page, for requests of a real DAG run that wait for different reasons."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from nuro_ml.capacity.ledger import QuotaLedger
from nuro_ml.capacity.records import LeaseRequest

from tests.fixtures.airflow_stack import AirflowStack
from tests.stack.browser.conftest import login, screenshot
from tests.stack.browser.test_gpu_capacity_page import PAGE, capacity_frame

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]

DAG_FILE = Path(__file__).resolve().parent / "dags" / "gpu_wait_reasons.py"
DAG_ID = "gpu_wait_reasons"
#: Task -> (reason code, the sentence's start) each sensor must report.
EXPECTED = {
    "over_quota": (
        "quota_limit",
        "team 'reasons-perception' holds 2 of its limit 2 GPUs in pool 'reasons-a'",
    ),
    "pool_short": ("pool_short", "pool 'reasons-b' has room for 2 GPUs"),
    "unreachable": ("backend_unreachable", "capacity back end of pool 'reasons-c' unreachable"),
}
NURO_ML = Path(sys.executable).with_name("nuro-ml")


@pytest.fixture(scope="module")
def ledger(airflow_stack: AirflowStack) -> Iterator[QuotaLedger]:
    """Pools whose GPUs are held: one team at its quota, one pool with too few GPUs free."""
    ledger = QuotaLedger(airflow_stack.ledger_url)
    ledger.upsert_pool("reasons-a", capacity=8, gpu_type="A100")
    ledger.upsert_quota("reasons-perception", "reasons-a", nominal=2, borrowing_limit=0)
    ledger.upsert_pool("reasons-b", capacity=4, gpu_type="H100")
    ledger.upsert_quota("reasons-mapping", "reasons-b", nominal=2)
    ledger.upsert_quota("reasons-prediction", "reasons-b", nominal=2)
    ledger.upsert_pool("reasons-c", capacity=2, gpu_type="L4")
    ledger.upsert_quota("reasons-mapping", "reasons-c", nominal=2)
    holders = [
        ledger.acquire(
            LeaseRequest(key="holder/a/gate/-1", team="reasons-perception", pool="reasons-a", gpus=2)
        ),
        ledger.acquire(
            LeaseRequest(key="holder/b/gate/-1", team="reasons-prediction", pool="reasons-b", gpus=2)
        ),
    ]
    airflow_stack.add_dag_files([DAG_FILE])
    airflow_stack.wait_for_dags([DAG_ID])
    try:
        yield ledger
    finally:
        for lease in holders:
            ledger.release(lease.lease_id)


def test_each_reason_is_in_the_sensor_log_the_cli_and_the_page(
    airflow_stack: AirflowStack, ledger: QuotaLedger, browser_context
) -> None:
    stack = airflow_stack
    run = stack.api("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", json_body={"logical_date": None})
    assert run.status_code == 200, run.text
    run_id = run.json()["dag_run_id"]
    keys = {task: f"{DAG_ID}/{run_id}/{task}/-1" for task in EXPECTED}
    try:
        # The sensor's own task log: "Waiting for N GPUs of pool P [code]: sentence".
        logs: dict[str, str] = {}
        deadline = time.monotonic() + 240
        while len(logs) < len(EXPECTED):
            for task, (code, sentence) in EXPECTED.items():
                text = stack.task_log(DAG_ID, run_id, task)
                if f"[{code}]: " in text and sentence in text:
                    logs[task] = text
            if time.monotonic() > deadline:
                missing = sorted(set(EXPECTED) - set(logs))
                pytest.fail(f"reasons not logged by {missing}: {stack.task_states(DAG_ID, run_id)}")
            stack.check_alive()
            time.sleep(2.0)

        # The CLI an on-call engineer runs.
        shown = subprocess.run(
            [str(NURO_ML), "quota", "--ledger-url", stack.ledger_url, "show", "--json"],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        waiting = {w["key"]: w for w in json.loads(shown.stdout)["queue"]}
        for task, (code, sentence) in EXPECTED.items():
            assert waiting[keys[task]]["reason"] == code
            assert sentence in waiting[keys[task]]["reason_message"]
        text = subprocess.run(
            [str(NURO_ML), "quota", "--ledger-url", stack.ledger_url, "show"],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        for task, (code, _) in EXPECTED.items():
            assert any(keys[task] in line and code in line for line in text.splitlines()), text

        # The capacity page: the queue's "Why" column of each waiting request.
        page = login(browser_context, stack, "admin")
        page.goto(f"{stack.base_url}{PAGE}")
        frame = capacity_frame(page)
        for task, (code, sentence) in EXPECTED.items():
            cell = frame.locator(f'#queue tr[data-key="{keys[task]}"] td.reason')
            cell.wait_for()
            why = cell.inner_text()
            assert code in why and sentence in why, why
        screenshot(page, "gpu-capacity-wait-reasons")
    finally:
        stack.api(
            "PATCH", f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}", json_body={"state": "failed"}
        )
