"""The GPU capacity page in the Airflow UI, driven by a person's steps in headless Chromium.

An admin triggers a pipeline from its typed trigger form with a changed GPU count; its
capacity sensor takes a lease while the training stage runs, and the capacity page (inside
the Airflow UI) shows the pool, the team's quota use and the lease of that very task run.
A viewer sees the page but cannot change quotas; without a login the API answers 401.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

import httpx
import pytest
from nuro_ml.capacity.ledger import QuotaLedger

from tests.fixtures.airflow_stack import AirflowStack
from tests.stack.browser.conftest import login, screenshot

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, FrameLocator, Page

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]

SPEC = Path(__file__).resolve().parent / "pipelines" / "perception_gpu_trial.yaml"
DAG_ID = "perception_gpu_trial"
POOL = "a100"
CAPACITY = 8
PAGE = "/plugin/gpu-capacity"


@dataclass
class Trial:
    stack: AirflowStack
    ledger: QuotaLedger

    def release_file(self, run_id: str) -> Path:
        """The file the pipeline's ``train`` stage waits for before it finishes."""
        safe = run_id.replace(":", "_").replace("+", "_")
        return self.stack.data_dir / "release" / safe

    def release(self, run_id: str) -> None:
        path = self.release_file(run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


@pytest.fixture(scope="module")
def trial(airflow_stack: AirflowStack) -> Iterator[Trial]:
    """Pools and quotas registered by the platform team, and the trial pipeline deployed."""
    ledger = QuotaLedger(airflow_stack.ledger_url)
    ledger.upsert_pool(POOL, capacity=CAPACITY, gpu_type="A100")
    ledger.upsert_quota("perception", POOL, nominal=4, borrowing_limit=2, lending_limit=None)
    ledger.upsert_quota("research", POOL, nominal=4, borrowing_limit=None, lending_limit=None)
    airflow_stack.add_pipeline_specs([SPEC])
    airflow_stack.wait_for_dags([DAG_ID])
    state = Trial(airflow_stack, ledger)
    try:
        yield state
    finally:
        # A failed test must not leave a run holding GPUs and a worker slot for the rest of the session.
        runs = airflow_stack.get_json(f"/api/v2/dags/{DAG_ID}/dagRuns")["dag_runs"]
        for run in runs:
            if run["state"] not in ("success", "failed"):
                state.release(run["dag_run_id"])


def capacity_frame(page: Page) -> FrameLocator:
    """The capacity app as the UI embeds it (the plugin's external view)."""
    frame = page.frame_locator("iframe")
    frame.locator("h1", has_text="GPU capacity").wait_for()
    return frame


def cells(frame: FrameLocator, selector: str) -> list[str]:
    return [text.strip() for text in frame.locator(f"{selector} td").all_inner_texts()]


def current_lease(stack: AirflowStack, run_id: str) -> dict[str, Any]:
    """The run's active lease, as the capacity API reports it to an admin."""
    leases = stack.get_json("/nuro-ml/api/capacity")["leases"]
    held = [lease for lease in leases if lease["run_id"] == run_id]
    assert len(held) == 1, leases
    return dict(held[0])


def test_plugin_api_needs_a_login(trial: Trial) -> None:
    stack = trial.stack
    anonymous = stack.api("GET", "/nuro-ml/api/capacity", user=None)
    assert anonymous.status_code == 401, anonymous.text
    page = stack.api("GET", "/nuro-ml/capacity", user=None)
    assert page.status_code == 401
    assert "log in" in page.text.lower()
    forged = httpx.get(
        f"{stack.base_url}/nuro-ml/api/capacity", headers={"Authorization": "Bearer not-a-jwt"}, timeout=30
    )
    assert forged.status_code == 401


def test_viewer_sees_the_page_but_cannot_change_quotas(trial: Trial, browser_context: BrowserContext) -> None:
    stack = trial.stack
    before = next(q for q in trial.ledger.quotas(POOL) if q.team == "research")
    page = login(browser_context, stack, "viewer")
    page.goto(f"{stack.base_url}{PAGE}")
    frame = capacity_frame(page)
    frame.locator("#quotas tr[data-team=research]").wait_for()
    assert cells(frame, f"#pools tr[data-pool={POOL}]")[:3] == [POOL, "A100", str(CAPACITY)]
    assert frame.locator("#quota-form").count() == 0
    assert frame.locator("button.edit-quota").count() == 0
    screenshot(page, "gpu-capacity-viewer")

    # The viewer's own browser session, calling the API the page's script would call.
    status = frame.locator("body").evaluate(
        """async (body) => (await fetch(body.dataset.api + "/quotas/a100/research", {
               method: "PUT", credentials: "same-origin",
               headers: {"Content-Type": "application/json"},
               body: JSON.stringify({nominal: 8})})).status"""
    )
    assert status == 403
    rest = stack.api("PUT", f"/nuro-ml/api/quotas/{POOL}/research", user="viewer", json_body={"nominal": 8})
    assert rest.status_code == 403, rest.text
    assert next(q for q in trial.ledger.quotas(POOL) if q.team == "research") == before


def test_admin_changes_a_quota_on_the_page(trial: Trial, browser_context: BrowserContext) -> None:
    stack = trial.stack
    page = login(browser_context, stack, "admin")
    page.goto(f"{stack.base_url}{PAGE}")
    frame = capacity_frame(page)
    form = frame.locator("#quota-form")
    form.locator("input[name=team]").fill("research")
    form.locator("select[name=pool]").select_option(POOL)
    form.locator("input[name=nominal]").fill("3")
    form.locator("input[name=borrowing_limit]").fill("1")
    form.locator("button[type=submit]").click()
    # The page reloads itself after a successful change.
    frame.locator("#quotas tr[data-team=research] td:nth-child(3)", has_text="3").wait_for()
    assert cells(frame, "#quotas tr[data-team=research]")[:5] == ["research", POOL, "3", "1", "all"]
    research = next(q for q in trial.ledger.quotas(POOL) if q.team == "research")
    assert (research.nominal, research.borrowing_limit) == (3, 1)


def test_triggered_pipeline_holds_a_lease_shown_on_the_page(
    trial: Trial, browser_context: BrowserContext
) -> None:
    stack = trial.stack
    page = login(browser_context, stack, "admin")

    # Trigger from the DAG's typed form, asking for 3 GPUs instead of the default 1.
    page.goto(f"{stack.base_url}/dags/{DAG_ID}")
    page.get_by_role("button", name="Trigger").click()
    dialog = page.get_by_role("dialog")
    gpus = dialog.locator("input[name=element_gpus]")
    assert gpus.input_value() == "1"
    gpus.fill("3")
    screenshot(page, "trigger-form")
    dialog.get_by_role("button", name="Trigger").click()
    page.wait_for_url("**/runs/**")
    run_id = unquote(page.url.split("/runs/", 1)[1].split("?")[0].rstrip("/"))

    run = stack.get_json(f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}")
    assert run["conf"] == {"gpus": 3}
    assert run["run_type"] == "manual"

    try:
        # The sensor took the lease; the training stage now runs on those GPUs.
        stack.wait_for_task(DAG_ID, run_id, "train", "running")
        assert stack.task_states(DAG_ID, run_id)["wait_for_gpus"] == "success"
        lease = current_lease(stack, run_id)
        assert (lease["team"], lease["pool"], lease["gpus"], lease["task_id"]) == (
            "perception",
            POOL,
            3,
            "wait_for_gpus",
        )

        page.goto(f"{stack.base_url}{PAGE}")
        frame = capacity_frame(page)
        lease_row = frame.locator(f"#leases tr[data-lease={lease['lease_id']}]")
        lease_row.wait_for()
        row = [text.strip() for text in lease_row.locator("td").all_inner_texts()]
        assert row[:5] == ["perception", POOL, "3", f"{DAG_ID} / wait_for_gpus", run_id]
        pool = cells(frame, f"#pools tr[data-pool={POOL}]")
        assert pool[:5] == [POOL, "A100", str(CAPACITY), "3", str(CAPACITY - 3)]
        assert "38%" in pool[5]
        perception = cells(frame, "#quotas tr[data-team=perception]")
        assert perception[:2] == ["perception", POOL] and perception[6] == "3"
        screenshot(page, "gpu-capacity-lease")
    finally:
        trial.release(run_id)

    finished = stack.wait_for_run(DAG_ID, run_id, timeout=240)
    assert finished["state"] == "success", stack.task_states(DAG_ID, run_id)
    released = trial.ledger.lease(lease["lease_id"])
    assert released is not None and not released.active

    page.reload()
    frame = capacity_frame(page)
    assert frame.locator("#leases").inner_text().count(run_id) == 0
    assert "No GPUs are leased right now." in frame.locator("#leases").inner_text()
    assert cells(frame, f"#pools tr[data-pool={POOL}]")[3:5] == ["0", str(CAPACITY)]
    costs = cells(frame, "#costs tbody tr")
    assert costs[:2] == ["perception", POOL]
    screenshot(page, "gpu-capacity-released")
