"""1,000 waiting GPU-capacity triggers in one asyncio loop, as a triggerer process runs them.

Every trigger waits on a full pool (a lease holds all of its GPUs), so none is admitted and
each keeps polling. The back end counts its ``get_capacity`` calls. Measured over
``--seconds`` of steady state (after all triggers subscribed):

* ours: :class:`nuro_ml.triggers.gpu_capacity.GpuCapacityTrigger`, which shares one
  poller per back end per process;
* reference: the usual deferrable-operator pattern (each trigger polls the back end and
  runs its own admission check on its own schedule), the same trigger class with the
  shared poller bypassed.

CPU is this process's CPU time (all threads) over wall time, in percent of one core.
Prints::

    triggerer_1000: backend queries per interval X (waiting 1000), CPU Y%
    triggerer_1000_queries: ours X queries/interval, reference Y queries/interval, ratio Z
    triggerer_1000_cpu: ours X %, reference Y %, ratio Z

Run: ``python -m benchmarks.triggerer [--triggers N] [--interval S] [--seconds S]``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

from airflow.triggers.base import TriggerEvent
from nuro_ml.capacity.backends.base import (
    CapacityBackend,
    CapacityBackendConfig,
    PoolCapacity,
    load_backend,
)
from nuro_ml.capacity.ledger import QuotaLedger
from nuro_ml.capacity.records import LeaseRequest
from nuro_ml.triggers.gpu_capacity import GpuCapacityTrigger

POOL = "local"
CAPACITY = 4
BACKEND_TYPE = "benchmarks.triggerer.CountingBackend"


class CountingBackendConfig(CapacityBackendConfig):
    type: str = BACKEND_TYPE
    name: str


class CountingBackend(CapacityBackend):
    """Reports one pool and counts queries per config ``name``."""

    config_class = CountingBackendConfig
    config: CountingBackendConfig
    queries: ClassVar[dict[str, int]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def get_capacity(self) -> list[PoolCapacity]:
        with self._lock:
            self.queries[self.config.name] = self.queries.get(self.config.name, 0) + 1
        return [PoolCapacity(POOL, CAPACITY, CAPACITY, source="counting")]


class PerTriggerPollingTrigger(GpuCapacityTrigger):
    """Reference: each trigger polls the back end itself and, when it sees room, tries the ledger."""

    executor: ClassVar[ThreadPoolExecutor | None] = None

    async def run(self) -> AsyncIterator[TriggerEvent]:
        backend = load_backend(self.backend or {})
        ledger = QuotaLedger(self.ledger_url)
        request = self.lease_request()
        loop = asyncio.get_running_loop()
        while True:
            capacities = await loop.run_in_executor(self.executor, backend.get_capacity)
            free = sum(c.free_gpus for c in capacities if c.pool == request.pool)
            if free >= request.gpus:
                lease = await loop.run_in_executor(self.executor, ledger.try_acquire, request)
                if lease is not None:
                    yield TriggerEvent({"status": "success", "lease_id": lease.lease_id})
                    return
            await asyncio.sleep(self.poll_interval)


def _ledger(directory: Path, triggers: int, interval: float) -> tuple[str, list[LeaseRequest]]:
    url = f"sqlite:///{directory / 'ledger.db'}"
    ledger = QuotaLedger(url)
    ledger.upsert_pool(POOL, capacity=CAPACITY)
    ledger.upsert_quota("perception", POOL, nominal=CAPACITY)
    ledger.try_acquire(LeaseRequest(key="holder", team="perception", pool=POOL, gpus=CAPACITY))
    requests = [
        LeaseRequest(
            key=f"train/run/wait_{i:04d}/-1", team="perception", pool=POOL, gpus=1, poll_interval=interval
        )
        for i in range(triggers)
    ]
    for request in requests:  # what each sensor does before it defers
        ledger.enqueue(request)
    return url, requests


async def _measure(
    make: Callable[[LeaseRequest], GpuCapacityTrigger],
    requests: list[LeaseRequest],
    name: str,
    interval: float,
    seconds: float,
) -> tuple[float, float]:
    triggers = [make(r) for r in requests]
    tasks = [asyncio.ensure_future(anext(t.run())) for t in triggers]
    # Skip two intervals so start-up (first subscriptions, first polls) is not counted.
    await asyncio.sleep(2 * interval)
    # The class the triggers load by dotted path (under ``python -m`` this module is __main__).
    loaded = load_backend({"type": BACKEND_TYPE, "name": name})
    assert isinstance(loaded, CapacityBackend)
    counter: dict[str, int] = loaded.__class__.queries  # type: ignore[attr-defined]
    start_queries = counter.get(name, 0)
    wall0, cpu0 = time.monotonic(), time.process_time()
    await asyncio.sleep(seconds)
    wall = time.monotonic() - wall0
    cpu = time.process_time() - cpu0
    queries = counter.get(name, 0) - start_queries
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return queries / (wall / interval), 100.0 * cpu / wall


def run(triggers: int, interval: float, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-triggerer-") as tmp:
        url, requests = _ledger(Path(tmp), triggers, interval)

        def ours(request: LeaseRequest) -> GpuCapacityTrigger:
            return GpuCapacityTrigger(
                request_key=request.key,
                team=request.team,
                pool=request.pool,
                gpus=request.gpus,
                backend={"type": BACKEND_TYPE, "name": "ours"},
                ledger_url=url,
                poll_interval=interval,
            )

        def reference(request: LeaseRequest) -> GpuCapacityTrigger:
            return PerTriggerPollingTrigger(
                request_key=request.key,
                team=request.team,
                pool=request.pool,
                gpus=request.gpus,
                backend={"type": BACKEND_TYPE, "name": "reference"},
                ledger_url=url,
                poll_interval=interval,
            )

        async def both() -> dict[str, Any]:
            ours_q, ours_cpu = await _measure(ours, requests, "ours", interval, seconds)
            ref_q, ref_cpu = await _measure(reference, requests, "reference", interval, seconds)
            return {"ours_queries": ours_q, "ours_cpu": ours_cpu, "ref_queries": ref_q, "ref_cpu": ref_cpu}

        executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="reference-trigger")
        PerTriggerPollingTrigger.executor = executor
        try:
            return asyncio.run(both())
        finally:
            # Polls still queued when the reference was stopped are dropped, not run.
            executor.shutdown(wait=True, cancel_futures=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--triggers", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=2.0, help="poll interval of every trigger (s)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured steady-state time per variant")
    args = parser.parse_args(argv)
    result = run(args.triggers, args.interval, args.seconds)
    n = args.triggers
    print(
        f"triggerer_{n}: backend queries per interval {result['ours_queries']:.2f} (waiting {n}), "
        f"CPU {result['ours_cpu']:.1f}%"
    )
    print(
        f"triggerer_{n}_queries: ours {result['ours_queries']:.2f} queries/interval, "
        f"reference {result['ref_queries']:.2f} queries/interval, "
        f"ratio {result['ref_queries'] / max(result['ours_queries'], 1e-9):.1f}"
    )
    print(
        f"triggerer_{n}_cpu: ours {result['ours_cpu']:.1f} %, reference {result['ref_cpu']:.1f} %, "
        f"ratio {result['ref_cpu'] / max(result['ours_cpu'], 1e-9):.1f}"
    )
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
