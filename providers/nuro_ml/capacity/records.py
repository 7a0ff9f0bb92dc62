"""Value objects of the GPU quota ledger: pools, quotas, lease requests, leases."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from nuro_ml.exceptions import CapacityError

#: Smallest interval after which an unrefreshed waiting request stops counting as queued.
MIN_STALE_AFTER_SECONDS = 60.0


class LeaseState(StrEnum):
    """Lifecycle of a lease: only ``active`` leases hold GPUs."""

    ACTIVE = "active"
    RELEASED = "released"
    EXPIRED = "expired"

    def is_terminal(self) -> bool:
        return self is not LeaseState.ACTIVE


class RequestState(StrEnum):
    """Lifecycle of a queued request; ``waiting`` ones are what the admission policy orders."""

    WAITING = "waiting"
    ADMITTED = "admitted"
    WITHDRAWN = "withdrawn"
    TIMED_OUT = "timed_out"
    ABANDONED = "abandoned"

    def is_terminal(self) -> bool:
        return self is not RequestState.WAITING


def lease_key(dag_id: str, run_id: str, task_id: str, map_index: int | None = -1) -> str:
    """Idempotency key of a task instance's lease: a retry of the same task gets the same key."""
    index = -1 if map_index is None else int(map_index)
    return f"{dag_id}/{run_id}/{task_id}/{index}"


@dataclass(frozen=True)
class Pool:
    """A set of interchangeable GPUs (one GPU type) with a fixed capacity."""

    name: str
    capacity: int
    gpu_type: str | None = None


@dataclass(frozen=True)
class Quota:
    """A team's share of a pool (Kueue-style).

    ``nominal`` GPUs are the team's own; up to ``borrowing_limit`` more may be borrowed from
    other teams' idle nominal quota (``None``: no limit beyond the pool); at most
    ``lending_limit`` of the team's idle nominal quota may be lent out (``None``: all of it).
    """

    team: str
    pool: str
    nominal: int
    borrowing_limit: int | None = None
    lending_limit: int | None = None

    def __post_init__(self) -> None:
        if self.nominal < 0:
            raise CapacityError(
                f"quota {self.team!r}/{self.pool!r}: nominal must be >= 0, got {self.nominal}"
            )
        if self.borrowing_limit is not None and self.borrowing_limit < 0:
            raise CapacityError(
                f"quota {self.team!r}/{self.pool!r}: borrowing_limit must be >= 0, got {self.borrowing_limit}"
            )
        if self.lending_limit is not None and not 0 <= self.lending_limit <= self.nominal:
            raise CapacityError(
                f"quota {self.team!r}/{self.pool!r}: lending_limit must be between 0 and nominal "
                f"({self.nominal}), got {self.lending_limit}"
            )

    @property
    def guaranteed(self) -> int:
        """GPUs of the nominal quota that are never lent to other teams."""
        return 0 if self.lending_limit is None else self.nominal - self.lending_limit

    def limit(self, pool_capacity: int) -> int:
        """Most GPUs the team may hold in the pool at once, borrowing included."""
        if self.borrowing_limit is None:
            return max(self.nominal, pool_capacity)
        return self.nominal + self.borrowing_limit


@dataclass(frozen=True)
class LeaseRequest:
    """What a waiting task asks for; ``key`` makes every ledger call for it idempotent."""

    key: str
    team: str
    pool: str
    gpus: int
    nodes: int = 1
    priority: int = 0
    ttl_seconds: float = 12 * 3600.0
    poll_interval: float = 30.0
    deadline: datetime | None = None

    def __post_init__(self) -> None:
        if self.gpus <= 0:
            raise CapacityError(f"request {self.key!r}: gpus must be a positive integer, got {self.gpus}")
        if self.nodes <= 0:
            raise CapacityError(f"request {self.key!r}: nodes must be a positive integer, got {self.nodes}")
        if self.gpus % self.nodes:
            raise CapacityError(
                f"request {self.key!r}: gpus ({self.gpus}) must split evenly over nodes ({self.nodes})"
            )
        if not math.isfinite(self.ttl_seconds) or self.ttl_seconds <= 0:
            raise CapacityError(f"request {self.key!r}: lease ttl must be positive, got {self.ttl_seconds}")

    @property
    def stale_after_seconds(self) -> float:
        """A waiting request nobody refreshed for this long no longer blocks the queue."""
        return max(3 * self.poll_interval, MIN_STALE_AFTER_SECONDS)


@dataclass(frozen=True)
class Lease:
    """GPUs held by one task instance until released or expired."""

    lease_id: str
    key: str
    team: str
    pool: str
    gpus: int
    nodes: int
    priority: int
    state: LeaseState
    acquired_at: datetime
    heartbeat_at: datetime
    expires_at: datetime
    ttl_seconds: float
    borrowed: int = 0
    released_at: datetime | None = None
    reclaim_requested_at: datetime | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.state, LeaseState):
            object.__setattr__(self, "state", LeaseState(self.state))

    @property
    def active(self) -> bool:
        return self.state is LeaseState.ACTIVE

    def held_seconds(self, now: datetime) -> float:
        """How long the GPUs were (or have so far been) held."""
        if self.released_at is not None:
            end = self.released_at
        elif self.state is LeaseState.EXPIRED:
            end = min(self.expires_at, now)
        else:
            end = now
        return max(0.0, (end - self.acquired_at).total_seconds())

    def gpu_hours(self, now: datetime) -> float:
        return self.gpus * self.held_seconds(now) / 3600.0


@dataclass(frozen=True)
class QueuedRequest:
    """A request as stored in the ledger's queue, with its wait-time bookkeeping."""

    id: int
    key: str
    team: str
    pool: str
    gpus: int
    nodes: int
    priority: int
    state: RequestState
    enqueued_at: datetime
    last_seen_at: datetime
    stale_after_seconds: float
    ttl_seconds: float
    deadline: datetime | None = None
    admitted_at: datetime | None = None
    ended_at: datetime | None = None
    lease_id: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.state, RequestState):
            object.__setattr__(self, "state", RequestState(self.state))

    def wait_seconds(self, now: datetime) -> float:
        end = self.admitted_at or self.ended_at or now
        return max(0.0, (end - self.enqueued_at).total_seconds())
