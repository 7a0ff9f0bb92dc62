"""Fixtures for KubeRay tests against the stand-in Kubernetes API server."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred
from airflow.triggers.base import BaseTrigger

from tests.fixtures.kube_api import CONN_ID, KubeApiStandIn, kube_api, kube_api_server  # noqa: F401


@dataclass
class TaskInstanceStub:
    """The slice of the runtime task instance the operator touches: identity and XCom push."""

    dag_id: str = "av_training"
    run_id: str = "scheduled__2026-11-01T00:00:00+00:00"
    task_id: str = "train_on_kuberay"
    map_index: int = -1
    try_number: int = 1
    xcom: dict[str, Any] = field(default_factory=dict)

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


@dataclass
class Outcome:
    """What a task run produced: return value or error, plus every trigger event on the way."""

    result: Any = None
    error: BaseException | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    triggers: list[BaseTrigger] = field(default_factory=list)


async def first_event(trigger: BaseTrigger) -> dict[str, Any]:
    async for event in trigger.run():
        return dict(event.payload)
    raise AssertionError(f"{trigger!r} ended without an event")


def run_task(operator: Any, ti: TaskInstanceStub) -> Outcome:
    """execute -> (TaskDeferred -> run the trigger -> resume)* until the task returns or raises."""
    context: dict[str, Any] = {"ti": ti, "task_instance": ti}
    outcome = Outcome()
    try:
        try:
            outcome.result = operator.execute(context)
            return outcome
        except TaskDeferred as deferred:
            pending = deferred
        for _ in range(10):
            outcome.triggers.append(pending.trigger)
            event = asyncio.run(first_event(pending.trigger))
            outcome.events.append(event)
            try:
                outcome.result = getattr(operator, pending.method_name)(
                    context, event=event, **(pending.kwargs or {})
                )
                return outcome
            except TaskDeferred as again:
                pending = again
        raise AssertionError("task kept deferring")
    except TaskDeferred:
        raise
    except Exception as err:
        outcome.error = err
        return outcome


@pytest.fixture
def ti() -> TaskInstanceStub:
    return TaskInstanceStub()


@pytest.fixture
def conn_id(kube_api: KubeApiStandIn) -> str:  # noqa: F811
    return CONN_ID
