"""Fixtures for Ray job tests against a real local Ray cluster (head + worker node)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred
from nuro_ml.hooks.ray import RayHook

from tests.fixtures.ray_cluster import RayCluster, ray_cluster  # noqa: F401
from tests.unit.ray.stubs import TaskInstanceStub
from tests.unit.ray.training_data import write_training_parquet


@pytest.fixture(scope="session")
def training_parquet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_training_parquet(tmp_path_factory.mktemp("ray-data") / "scenes.parquet", rows=400)


@pytest.fixture
def hook(ray_cluster: RayCluster) -> Iterator[RayHook]:  # noqa: F811
    yield RayHook(None, address=ray_cluster.dashboard_url)


@pytest.fixture
def ti(request: pytest.FixtureRequest) -> TaskInstanceStub:
    # A run id per test: every test owns its own submission ids on the shared cluster.
    return TaskInstanceStub(dag_id="ray_it", run_id=f"it__{request.node.name}", task_id="train")


async def first_event(trigger: Any) -> dict[str, Any]:
    async for event in trigger.run():
        return dict(event.payload)
    raise AssertionError(f"{trigger!r} ended without an event")


def run_deferrable(operator: Any, ti: TaskInstanceStub) -> Any:
    """execute -> (TaskDeferred -> run the trigger -> resume)* until the task returns or raises."""
    context: dict[str, Any] = {"ti": ti}
    try:
        return operator.execute(context)
    except TaskDeferred as deferred:
        pending = deferred
    for _ in range(100):
        event = asyncio.run(first_event(pending.trigger))
        try:
            return getattr(operator, pending.method_name)(context, event, **(pending.kwargs or {}))
        except TaskDeferred as again:
            pending = again
    raise AssertionError("task kept deferring")


def jobs_of(hook: RayHook, ti: TaskInstanceStub) -> list[str]:
    """Submission ids on the cluster that this task instance submitted."""
    identity = f"{ti.dag_id}/{ti.run_id}/{ti.task_id}/{ti.map_index}"
    return sorted(
        j.submission_id for j in hook.list_jobs() if j.metadata.get("nuro_ml_task_instance") == identity
    )
