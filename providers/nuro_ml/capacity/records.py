"""Value objects of the GPU quota ledger: pools, quotas, lease requests, leases."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from nuro_ml.exceptions import CapacityError
from nuro_ml.task_key import TaskKey

#: Milli-GPUs in one GPU: the ledger counts GPU amounts in milli-GPUs.
MILLI = 1000

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


def gpus_from_milli(milli: int) -> int | float:
    """Milli-GPUs as GPUs: whole amounts stay integers (2), shares do not (2.5)."""
    return milli // MILLI if milli % MILLI == 0 else milli / MILLI


def gpu_quantity(value: object, *, what: str) -> int | float:
    """A GPU amount as users write it: GPUs (``4``, ``2.5``, ``"2.5"``) or milli-GPUs (``"2500m"``).

    Whole amounts come back as ``int``. The ledger counts milli-GPUs, so anything finer than
    one milli-GPU, negative, or not a number is refused with ``what`` in the message.
    """
    if isinstance(value, bool):
        raise CapacityError(f"{what}: expected a number of GPUs, got {value!r}")
    text = value.strip() if isinstance(value, str) else value
    try:
        if isinstance(text, str) and text.endswith("m"):
            milli = float(text[:-1])
        elif isinstance(text, (int, float, str)):
            milli = float(text) * MILLI
        else:
            raise TypeError(text)
    except (TypeError, ValueError):
        raise CapacityError(f"{what}: expected GPUs (4, 2.5) or milli-GPUs (2500m), got {value!r}") from None
    if not math.isfinite(milli) or milli < 0:
        raise CapacityError(f"{what}: must be a non-negative number of GPUs, got {value!r}")
    whole_milli = round(milli)
    if abs(milli - whole_milli) > 1e-6:
        raise CapacityError(f"{what}: GPU amounts are counted in milli-GPUs (0.001 GPU), got {value!r}")
    return gpus_from_milli(whole_milli)


def milli_of(gpus: float) -> int:
    """GPUs (whole or fractional) as milli-GPUs."""
    return round(gpus * MILLI)


def lease_key(key: TaskKey) -> str:
    """Idempotency key of a task instance's lease: a retry of the same task gets the same key."""
    return key.format()


@dataclass(frozen=True)
class Pool:
    """A set of GPUs with a capacity (whole GPUs); with nodes registered, their GPUs."""

    name: str
    capacity: int
    gpu_type: str | None = None


@dataclass(frozen=True)
class LeaseShare:
    """``milli`` milli-GPUs of GPU number ``gpu`` on node ``node``, held by a lease."""

    node: str
    gpu: int
    milli: int


@dataclass(frozen=True)
class Quota:
    """A team's share of a pool (Kueue-style).

    ``nominal`` GPUs are the team's own; up to ``borrowing_limit`` more may be borrowed from
    other teams' idle nominal quota (``None``: no limit beyond the pool); at most
    ``lending_limit`` of the team's idle nominal quota may be lent out (``None``: all of it).
    Amounts may be fractional (2.5 GPUs): the ledger stores them in milli-GPUs.
    """

    team: str
    pool: str
    nominal: int | float
    borrowing_limit: int | float | None = None
    lending_limit: int | float | None = None

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
    def guaranteed(self) -> int | float:
        """GPUs of the nominal quota that are never lent to other teams."""
        return 0 if self.lending_limit is None else self.nominal - self.lending_limit

    def limit(self, pool_capacity: float) -> int | float:
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
    #: Milli-GPUs per GPU: 1000 (whole GPUs, the default) or a share of one GPU per node
    #: (MIG slice, MPS or time-slicing), then with one GPU per node.
    gpu_share: int = MILLI
    #: GPU model the request needs (``A|B``: either), matched against the pool's nodes.
    gpu_model: str | None = None

    def __post_init__(self) -> None:
        if self.gpus <= 0:
            raise CapacityError(f"request {self.key!r}: gpus must be a positive integer, got {self.gpus}")
        if not 0 < self.gpu_share <= MILLI:
            raise CapacityError(
                f"request {self.key!r}: gpu_share must be 1..{MILLI} milli-GPUs, got {self.gpu_share}"
            )
        if self.gpu_share < MILLI and self.gpus != self.nodes:
            raise CapacityError(
                f"request {self.key!r}: a GPU share ({self.gpu_share} milli-GPUs) is one GPU per node; "
                f"got {self.gpus} GPUs on {self.nodes} node(s)"
            )
        if self.nodes <= 0:
            raise CapacityError(f"request {self.key!r}: nodes must be a positive integer, got {self.nodes}")
        if self.gpus % self.nodes:
            raise CapacityError(
                f"request {self.key!r}: gpus ({self.gpus}) must split evenly over nodes ({self.nodes})"
            )
        if not math.isfinite(self.ttl_seconds) or self.ttl_seconds <= 0:
            raise CapacityError(f"request {self.key!r}: lease ttl must be positive, got {self.ttl_seconds}")

    @property
    def gpu_milli(self) -> int:
        """Milli-GPUs asked for in all: what counts against quotas and capacity."""
        return self.gpus * self.gpu_share

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
    #: Milli-GPUs held in all (``gpus`` x 1000 unless the lease holds GPU shares).
    gpu_milli: int | None = None
    #: The GPUs (and shares of them) the lease holds on named nodes; empty in pools
    #: without registered nodes.
    shares: tuple[LeaseShare, ...] = ()
    gpu_model: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.state, LeaseState):
            object.__setattr__(self, "state", LeaseState(self.state))
        if self.gpu_milli is None:
            object.__setattr__(self, "gpu_milli", self.gpus * MILLI)

    @property
    def active(self) -> bool:
        return self.state is LeaseState.ACTIVE

    @property
    def milli(self) -> int:
        return self.gpus * MILLI if self.gpu_milli is None else self.gpu_milli

    @property
    def gpu_count(self) -> float:
        """GPUs held, fractional for GPU shares (0.5 for half a GPU)."""
        return self.milli / MILLI

    @property
    def node_names(self) -> tuple[str, ...]:
        """The nodes the lease holds GPUs on, in placement order."""
        return tuple(dict.fromkeys(s.node for s in self.shares))

    def gpus_on(self, node: str) -> list[int]:
        """GPU numbers the lease uses on ``node``."""
        return [s.gpu for s in self.shares if s.node == node]

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
        return self.gpu_count * self.held_seconds(now) / 3600.0


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
    gpu_milli: int | None = None
    #: Why it waits as of the last admission round (a ``WaitReason`` code), its sentence,
    #: and the GPUs queued ahead of it; ``None`` until a round classified it.
    wait_reason: str | None = None
    wait_message: str | None = None
    gpus_ahead: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.state, RequestState):
            object.__setattr__(self, "state", RequestState(self.state))
        if self.gpu_milli is None:
            object.__setattr__(self, "gpu_milli", self.gpus * MILLI)

    def wait_seconds(self, now: datetime) -> float:
        end = self.admitted_at or self.ended_at or now
        return max(0.0, (end - self.enqueued_at).total_seconds())
