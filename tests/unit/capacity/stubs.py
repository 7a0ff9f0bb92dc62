"""Test doubles: a settable clock, a task instance, a back end that counts its queries."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from nuro_ml.capacity.backends.base import CapacityBackend, CapacityBackendConfig, PoolCapacity

COUNTING_BACKEND = "tests.unit.capacity.stubs.CountingBackend"


class Clock:
    """A settable clock for the ledger, so expiry is tested without sleeping."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class FakeTaskInstance:
    """The parts of a running task instance the capacity operators use."""

    def __init__(
        self,
        dag_id: str = "train",
        run_id: str = "manual__1",
        task_id: str = "wait_for_gpus",
        map_index: int = -1,
    ) -> None:
        self.dag_id = dag_id
        self.run_id = run_id
        self.task_id = task_id
        self.map_index = map_index
        self.try_number = 1
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


class CountingBackendConfig(CapacityBackendConfig):
    type: str = COUNTING_BACKEND
    name: str
    pool: str = "local"
    total_gpus: int = 4


class CountingBackend(CapacityBackend):
    """Reports a fixed pool and counts ``get_capacity`` calls per config ``name``."""

    config_class = CountingBackendConfig
    config: CountingBackendConfig
    queries: ClassVar[dict[str, int]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def get_capacity(self) -> list[PoolCapacity]:
        with self._lock:
            self.queries[self.config.name] = self.queries.get(self.config.name, 0) + 1
        return [
            PoolCapacity(self.config.pool, self.config.total_gpus, self.config.total_gpus, source="counting")
        ]
