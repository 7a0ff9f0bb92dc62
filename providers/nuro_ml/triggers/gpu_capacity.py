"""Trigger that waits until the admission policy lets a GPU request in, then holds its lease.

Every trigger in a triggerer process that polls the same back end (same
:meth:`~nuro_ml.capacity.backends.base.CapacityBackend.poll_key`) shares one poller: the
first trigger for a key starts its poll task, later ones subscribe to it, and the task stops
when the last one leaves. Each interval the poller queries the back end once, runs one
admission round per ledger for all of its waiting requests, and resolves the admitted
triggers in policy order. So the back end sees one query per interval whether 1 or 1,000
tasks are waiting.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import traceback
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from nuro_ml.capacity.admission import admission_round, record_unreachable
from nuro_ml.capacity.backends.base import CapacityBackend, PoolCapacity, load_backend
from nuro_ml.capacity.ledger import QuotaLedger
from nuro_ml.capacity.reasons import ReasonLog, WaitRecord
from nuro_ml.capacity.records import Lease, LeaseRequest, RequestState
from nuro_ml.exceptions import CapacityError

log = logging.getLogger(__name__)

#: Poll key used when no back end is configured: the ledger's own capacity is the truth.
LEDGER_ONLY = "ledger-only"
#: Waiting triggers get an error event once polling failed this many times in a row...
MAX_CONSECUTIVE_FAILURES = 3
#: ...and kept failing for at least this many seconds (a Ray head still starting up).
MIN_FAILING_SECONDS = 60.0


@dataclass
class Subscription:
    """One waiting trigger's place in a shared poller."""

    request: LeaseRequest
    ledger_url: str | None
    policy: str
    poll_interval: float
    future: asyncio.Future[Lease | str]
    id: int = field(default_factory=itertools.count().__next__)
    #: Why the request still waits, after each round; the trigger logs it when it changes.
    reasons: asyncio.Queue[WaitRecord] = field(default_factory=asyncio.Queue)


class SharedPoller:
    """Polls one back end for every subscribed trigger of this event loop."""

    def __init__(self, poll_key: str, backend: CapacityBackend | None) -> None:
        self.poll_key = poll_key
        self.backend = backend
        self.subscriptions: dict[int, Subscription] = {}
        self.backend_queries = 0
        self.rounds = 0
        self._task: asyncio.Task[None] | None = None
        self._ledgers: dict[str | None, QuotaLedger] = {}

    def subscribe(self, subscription: Subscription) -> None:
        self.subscriptions[subscription.id] = subscription
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"gpu-capacity-poller:{self.poll_key[:60]}"
            )

    def unsubscribe(self, subscription: Subscription) -> None:
        self.subscriptions.pop(subscription.id, None)
        if not self.subscriptions:
            _forget(self)
            if self._task is not None and not self._task.done():
                self._task.cancel()

    def _ledger(self, url: str | None) -> QuotaLedger:
        if url not in self._ledgers:
            self._ledgers[url] = QuotaLedger(url)
        return self._ledgers[url]

    async def _run(self) -> None:
        failures = 0
        failing_since = 0.0
        while self.subscriptions:
            try:
                await self.poll_once()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as err:
                if failures == 0:
                    failing_since = time.monotonic()
                failures += 1
                log.warning(
                    "GPU capacity poll of %s failed (%s in a row): %s", self.poll_key[:80], failures, err
                )
                if (
                    failures >= MAX_CONSECUTIVE_FAILURES
                    and time.monotonic() - failing_since >= MIN_FAILING_SECONDS
                ):
                    for sub in list(self.subscriptions.values()):
                        if not sub.future.done():
                            sub.future.set_exception(err)
                    failures = 0
            if not self.subscriptions:
                return
            await asyncio.sleep(min(s.poll_interval for s in self.subscriptions.values()))

    async def poll_once(self) -> None:
        """One interval: one back-end query, then one admission round per ledger and policy."""
        pending = [s for s in self.subscriptions.values() if not s.future.done()]
        if not pending:
            return
        groups: dict[tuple[str | None, str], list[Subscription]] = {}
        for sub in pending:
            groups.setdefault((sub.ledger_url, sub.policy), []).append(sub)
        capacities: list[PoolCapacity] | None = None
        if self.backend is not None:
            self.backend_queries += 1
            try:
                capacities = await self.backend.aget_capacity()
            except Exception as err:
                await self._report_unreachable(groups, err)
                raise
        self.rounds += 1
        for (url, policy), subs in groups.items():
            ledger = self._ledger(url)
            result = await asyncio.to_thread(
                admission_round, ledger, [s.request for s in subs], capacities, policy
            )
            by_key: dict[str, list[Subscription]] = {}
            for sub in subs:
                by_key.setdefault(sub.request.key, []).append(sub)
            for key, lease in result.leases.items():
                for sub in by_key.get(key, []):
                    if not sub.future.done():
                        sub.future.set_result(lease)
            for key, reason in result.failed.items():
                for sub in by_key.get(key, []):
                    if not sub.future.done():
                        sub.future.set_result(reason)
            _tell_reasons(subs, result.reasons)

    async def _report_unreachable(
        self, groups: dict[tuple[str | None, str], list[Subscription]], error: Exception
    ) -> None:
        for url, _policy in groups:
            subs = [s for (u, _p), group in groups.items() if u == url for s in group]
            try:
                records = await asyncio.to_thread(
                    record_unreachable, self._ledger(url), [s.request for s in subs], error
                )
            except CapacityError as ledger_err:
                log.warning("Could not record the unreachable back end in the ledger: %s", ledger_err)
                continue
            _tell_reasons(subs, records)


def _tell_reasons(subs: list[Subscription], records: dict[str, WaitRecord]) -> None:
    for sub in subs:
        record = records.get(sub.request.key)
        if record is not None and not sub.future.done():
            sub.reasons.put_nowait(record)


_POLLERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, SharedPoller]] = (
    weakref.WeakKeyDictionary()
)


def shared_poller(backend_config: dict[str, Any] | None) -> SharedPoller:
    """The running loop's poller for ``backend_config``, created on first use."""
    backend = load_backend(backend_config) if backend_config else None
    key = backend.poll_key() if backend is not None else LEDGER_ONLY
    pollers = _POLLERS.setdefault(asyncio.get_running_loop(), {})
    poller = pollers.get(key)
    if poller is None:
        poller = pollers[key] = SharedPoller(key, backend)
    return poller


def active_pollers() -> dict[str, SharedPoller]:
    """Pollers of the running loop by poll key (the capacity page and benchmarks read this)."""
    return dict(_POLLERS.get(asyncio.get_running_loop(), {}))


def _forget(poller: SharedPoller) -> None:
    for pollers in _POLLERS.values():
        if pollers.get(poller.poll_key) is poller:
            del pollers[poller.poll_key]


class GpuCapacityTrigger(BaseTrigger):
    """
    Wait in the GPU queue until the admission policy admits the request and a lease is taken.

    Fires one event: ``{"status": "success", "lease_id": ..., ...}`` once the lease is held
    (the acquire is one ledger transaction, idempotent by ``request_key``),
    ``{"status": "failed", ...}`` when the request can never be admitted (quota or pool too
    small), ``{"status": "timeout", ...}`` at ``deadline`` (the request is withdrawn), or
    ``{"status": "error", "stack_trace": ...}``.

    :param request_key: Idempotency key of the task instance (``dag/run/task/map_index``).
    :param team: Team whose quota the GPUs count against.
    :param pool: Ledger pool to take GPUs from.
    :param gpus: Total GPUs requested.
    :param nodes: Nodes the GPUs span; all are admitted together or not at all.
    :param priority: Higher goes first within the policy's ordering.
    :param backend: Back-end config dict (``{"type": "ray", "address": ...}``), or ``None``
        to admit on the ledger's capacity alone.
    :param ledger_url: Ledger database URL; ``None`` uses the triggerer's ``settings.ledger_url()``.
    :param lease_ttl: Seconds the lease lives without a heartbeat.
    :param poll_interval: Seconds between admission rounds.
    :param deadline: ISO-8601 UTC time after which the request times out, or ``None``.
    :param policy: Admission policy name (``fair`` or ``fifo``).
    """

    def __init__(
        self,
        *,
        request_key: str,
        team: str,
        pool: str,
        gpus: int,
        nodes: int = 1,
        priority: int = 0,
        backend: dict[str, Any] | None = None,
        ledger_url: str | None = None,
        lease_ttl: float = 12 * 3600.0,
        poll_interval: float = 30.0,
        deadline: str | None = None,
        policy: str = "fair",
        gpu_share: int = 1000,
        gpu_model: str | None = None,
    ) -> None:
        super().__init__()
        self.gpu_share = gpu_share
        self.gpu_model = gpu_model
        self.request_key = request_key
        self.team = team
        self.pool = pool
        self.gpus = gpus
        self.nodes = nodes
        self.priority = priority
        self.backend = backend
        self.ledger_url = ledger_url
        self.lease_ttl = lease_ttl
        self.poll_interval = poll_interval
        self.deadline = deadline
        self.policy = policy

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{self.__class__.__module__}.{self.__class__.__name__}",
            {
                "request_key": self.request_key,
                "team": self.team,
                "pool": self.pool,
                "gpus": self.gpus,
                "nodes": self.nodes,
                "priority": self.priority,
                "backend": self.backend,
                "ledger_url": self.ledger_url,
                "lease_ttl": self.lease_ttl,
                "poll_interval": self.poll_interval,
                "deadline": self.deadline,
                "policy": self.policy,
                "gpu_share": self.gpu_share,
                "gpu_model": self.gpu_model,
            },
        )

    def lease_request(self) -> LeaseRequest:
        return LeaseRequest(
            key=self.request_key,
            team=self.team,
            pool=self.pool,
            gpus=int(self.gpus),
            nodes=int(self.nodes),
            priority=int(self.priority),
            ttl_seconds=float(self.lease_ttl),
            poll_interval=float(self.poll_interval),
            deadline=self._deadline(),
            gpu_share=int(self.gpu_share),
            gpu_model=self.gpu_model,
        )

    def _deadline(self) -> datetime | None:
        return None if self.deadline is None else datetime.fromisoformat(self.deadline).astimezone(UTC)

    def _base_payload(self) -> dict[str, Any]:
        return {
            "request_key": self.request_key,
            "team": self.team,
            "pool": self.pool,
            "gpus": self.gpus,
        }

    async def run(self) -> AsyncIterator[TriggerEvent]:
        started = time.monotonic()
        try:
            request = self.lease_request()
            poller = shared_poller(self.backend)
            loop = asyncio.get_running_loop()
            subscription = Subscription(
                request=request,
                ledger_url=self.ledger_url,
                policy=self.policy,
                poll_interval=float(self.poll_interval),
                future=loop.create_future(),
            )
            poller.subscribe(subscription)
            deadline = self._deadline()
            timeout = None if deadline is None else max(0.0, (deadline - datetime.now(UTC)).total_seconds())
            try:
                outcome = await self._wait(subscription, timeout)
            except TimeoutError:
                held = await asyncio.to_thread(self._give_up)
                if held is None:
                    yield TriggerEvent(
                        {
                            **self._base_payload(),
                            "status": "timeout",
                            "message": f"no GPUs admitted for {self.request_key} before {self.deadline}",
                        }
                    )
                    return
                outcome = held
            finally:
                poller.unsubscribe(subscription)
            waited = time.monotonic() - started
            if isinstance(outcome, Lease):
                self.log.info(
                    "Admitted %s: lease %s, %s GPUs of pool %s, after %.1f s",
                    self.request_key,
                    outcome.lease_id,
                    outcome.gpus,
                    outcome.pool,
                    waited,
                )
                yield TriggerEvent(
                    {
                        **self._base_payload(),
                        "status": "success",
                        "lease_id": outcome.lease_id,
                        "borrowed": outcome.borrowed,
                        "expires_at": outcome.expires_at.isoformat(),
                        "waited_seconds": round(waited, 3),
                        "message": (
                            f"lease {outcome.lease_id} holds {outcome.gpus} GPUs of pool {outcome.pool}"
                        ),
                    }
                )
            else:
                yield TriggerEvent({**self._base_payload(), "status": "failed", "message": outcome})
        except Exception as err:
            yield TriggerEvent(
                {
                    **self._base_payload(),
                    "status": "error",
                    "message": f"{type(err).__name__}: {err}",
                    "stack_trace": traceback.format_exc(),
                }
            )

    async def _wait(self, subscription: Subscription, timeout: float | None) -> Lease | str:
        """The poller's outcome for ``subscription``, logging why it waits whenever that changes.

        Raises ``TimeoutError`` after ``timeout`` seconds; the subscription's future is left
        running so a lease taken in the same instant is not lost.
        """
        loop = asyncio.get_running_loop()
        ends = None if timeout is None else loop.time() + timeout
        reasons = ReasonLog()
        while True:
            remaining = None if ends is None else max(0.0, ends - loop.time())
            next_reason = loop.create_task(subscription.reasons.get())
            waits: set[asyncio.Future[Any]] = {subscription.future, next_reason}
            done, _ = await asyncio.wait(waits, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            if next_reason in done:
                record = next_reason.result()
                if reasons.changed(self.request_key, record):
                    self.log.info(
                        "Waiting for %s GPUs of pool %s [%s]: %s",
                        self.gpus,
                        self.pool,
                        record.reason,
                        record.message,
                    )
            else:
                next_reason.cancel()
            if subscription.future.done():
                return subscription.future.result()
            if not done:
                raise TimeoutError(f"{self.request_key} not admitted within {timeout} s")

    def _give_up(self) -> Lease | None:
        """At the deadline: leave the queue, unless a lease was taken in the same instant."""
        ledger = QuotaLedger(self.ledger_url)
        ledger.withdraw(self.request_key, state=RequestState.TIMED_OUT)
        return ledger.active_lease(self.request_key)

    async def on_kill(self) -> None:
        """The deferred task was killed: leave the queue and return anything already taken."""
        try:
            lease = await asyncio.to_thread(QuotaLedger(self.ledger_url).release_key, self.request_key)
            self.log.info(
                "Withdrew GPU request %s%s",
                self.request_key,
                f" and released lease {lease.lease_id}" if lease is not None else "",
            )
        except CapacityError:
            self.log.exception("Could not withdraw GPU request %s", self.request_key)
