"""GPU admission policy: pure functions over a snapshot of pools, quotas, leases and the queue.

The capacity trigger, the synchronous sensor path, the ledger's own invariant check and the
trace simulator all call into this module, so what the simulator measures is what runs.

Ordering (``fair`` policy): effective priority first (the request's priority plus one
level per ``aging_seconds`` of waiting, so nothing starves); within a priority level, a
virtual time: enqueue time delayed in proportion to the team's weighted dominant resource
share across pools (``fair_share_delay``), and further when the request would borrow
other teams' quota (``borrow_delay``).

Admission: a request is admitted when it fits the pool and its team's quota (borrowing
idle quota of other teams within the borrowing and lending limits) and does not delay a
reservation. A request that must wait for capacity gets a reservation at the earliest time
it fits, planned with the lease TTLs of running and reserved work (conservative backfill,
``reservations`` deep; 1 is EASY backfill), so small requests fill the gaps without
delaying bigger ones ahead of them. Multi-node (gang) requests are admitted whole or not at
all. With ``reclaim`` (preset ``fair-reclaim``), the first reserved request, if within its
team's nominal quota and waiting longer than ``reclaim_after``, asks borrowing leases of
no higher priority to give GPUs back.

The ``fifo`` policy is the reference: enqueue order, head-of-line blocking, no backfill.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from nuro_ml.capacity.records import Quota
from nuro_ml.exceptions import CapacityError


@dataclass(frozen=True)
class PoolView:
    """A pool as the policy sees it; ``observed_free`` comes from a back end, if any."""

    name: str
    capacity: int
    observed_free: int | None = None


@dataclass(frozen=True)
class Running:
    """GPUs held by an active lease; ``expires_at`` bounds when they come back."""

    lease_id: str
    key: str
    team: str
    pool: str
    gpus: int
    acquired_at: float
    expires_at: float
    priority: int = 0
    reclaim_requested: bool = False


@dataclass(frozen=True)
class Pending:
    """A waiting request; ``max_runtime`` (its lease TTL) is what backfill plans with."""

    key: str
    team: str
    pool: str
    gpus: int
    enqueued_at: float
    nodes: int = 1
    priority: int = 0
    max_runtime: float | None = None


@dataclass(frozen=True)
class Snapshot:
    """Everything a decision depends on, at time ``now`` (epoch seconds).

    GPU amounts (capacities, quotas, leases, requests) are counted in units of
    ``1 / unit`` GPU: the ledger passes milli-GPUs (``unit`` 1000), so GPU-sharing requests
    count their share; reasons are worded in GPUs either way.
    """

    now: float
    pools: Mapping[str, PoolView]
    quotas: Mapping[tuple[str, str], Quota]
    running: Sequence[Running] = ()
    pending: Sequence[Pending] = ()
    unit: int = 1


def gpu_amount(amount: float, unit: int = 1) -> str:
    """``amount`` (in ``1 / unit`` GPUs) as GPUs: ``8`` or ``0.5``."""
    value = amount / unit
    return f"{value:g}" if value != int(value) else str(int(value))


@dataclass(frozen=True)
class PolicyConfig:
    """Switches of the admission policy; ``fair`` and ``fifo`` are the named presets."""

    name: str = "fair"
    priorities: bool = True
    fair_share: bool = True
    borrowing: bool = True
    backfill: bool = True
    reclaim: bool = False
    head_of_line_blocking: bool = False
    #: Requests that get a reservation when they must wait for capacity (1: EASY backfill,
    #: more: conservative backfill, where no later request may delay any of them).
    reservations: int = 8
    #: A request within its team's nominal quota that has waited this long for capacity
    #: asks borrowers to give GPUs back (reclaim); shorter waits do not disturb running work.
    reclaim_after: float = 600.0
    #: Waiting this long raises a request's effective priority by one level (0: no aging).
    aging_seconds: float = 1800.0
    #: Fair share as queueing delay: within a priority level a team's requests line up as if
    #: enqueued this many seconds later per unit of weighted dominant share. A bounded delay
    #: (not a strict share order) keeps big jobs of a busy team from starving.
    fair_share_delay: float = 300.0
    #: Requests that would borrow other teams' quota line up this many seconds later than
    #: requests within their team's nominal quota (with reclaim on, this keeps reclaimed GPUs
    #: from going straight back to the borrower they were taken from).
    borrow_delay: float = 0.0


POLICIES: dict[str, PolicyConfig] = {
    # Reclaim is opt-in: replaying traces, preempting borrowers (their work restarts) cost
    # far more queueing than it saved; it suits clusters whose jobs checkpoint.
    "fair": PolicyConfig(),
    "fair-reclaim": PolicyConfig(name="fair-reclaim", reclaim=True, borrow_delay=900.0),
    "fifo": PolicyConfig(
        name="fifo",
        priorities=False,
        fair_share=False,
        backfill=False,
        reclaim=False,
        head_of_line_blocking=True,
        aging_seconds=0.0,
    ),
}


def get_policy(name: str | PolicyConfig) -> PolicyConfig:
    """Resolve a policy preset by name (``fair``, ``fifo``)."""
    if isinstance(name, PolicyConfig):
        return name
    try:
        return POLICIES[name]
    except KeyError:
        raise CapacityError(f"unknown admission policy {name!r}; choose one of {sorted(POLICIES)}") from None


class Fit(StrEnum):
    """Outcome of checking one request against a pool and its team's quota."""

    FITS = "fits"
    QUOTA_FULL = "quota_full"
    CAPACITY_FULL = "capacity_full"
    NO_POOL = "no_pool"
    NO_QUOTA = "no_quota"
    NEVER = "never"

    def is_permanent(self) -> bool:
        """True when waiting cannot help: the request can never be admitted as configured."""
        return self in (Fit.NO_POOL, Fit.NO_QUOTA, Fit.NEVER)


@dataclass(frozen=True)
class FitResult:
    fit: Fit
    reason: str = ""
    #: Borrowed amount (in the usage's unit; fractional with fractional quotas in GPUs).
    borrowed: int | float = 0


@dataclass
class PoolUsage:
    """Mutable usage of one pool while a decision (or a ledger transaction) is being made."""

    capacity: int
    used: int = 0
    by_team: dict[str, int] = field(default_factory=dict)
    #: What the back end still reports free after this decision's tentative admissions.
    observed_left: int | None = None
    #: Amounts are in ``1 / unit`` GPUs (1000: milli-GPUs); only used to word reasons.
    unit: int = 1

    @classmethod
    def from_leases(
        cls,
        capacity: int,
        leases: Iterable[tuple[str, int]],
        observed_free: int | None = None,
        unit: int = 1,
    ) -> PoolUsage:
        usage = cls(capacity=capacity, observed_left=observed_free, unit=unit)
        for team, gpus in leases:
            usage.used += gpus
            usage.by_team[team] = usage.by_team.get(team, 0) + gpus
        return usage

    def add(self, team: str, gpus: int) -> None:
        self.used += gpus
        self.by_team[team] = self.by_team.get(team, 0) + gpus
        if self.observed_left is not None:
            self.observed_left -= gpus

    def room_for(self, team: str, quotas: Mapping[str, Quota]) -> int | float:
        """GPUs ``team`` could take now: free capacity minus other teams' idle guaranteed quota."""
        reserved = sum(
            max(0, quota.guaranteed - self.by_team.get(other, 0))
            for other, quota in quotas.items()
            if other != team
        )
        room = self.capacity - self.used - reserved
        if self.observed_left is not None:
            room = min(room, self.observed_left)
        return room


def check_fit(
    usage: PoolUsage,
    quotas: Mapping[str, Quota],
    *,
    pool: str,
    team: str,
    gpus: int,
    borrowing: bool = True,
) -> FitResult:
    """Can ``team`` take ``gpus`` more GPUs from ``pool`` right now without breaking a limit?

    ``quotas`` maps team name to that team's quota in this pool. This is the single check
    behind both the policy and the ledger's acquire transaction.
    """
    quota = quotas.get(team)
    if quota is None:
        return FitResult(Fit.NO_QUOTA, f"team {team!r} has no quota in pool {pool!r}")
    limit = quota.limit(usage.capacity) if borrowing else quota.nominal
    guaranteed_elsewhere = sum(q.guaranteed for other, q in quotas.items() if other != team)
    ceiling = min(limit, usage.capacity - guaranteed_elsewhere)
    unit = usage.unit

    def g(amount: float) -> str:
        return gpu_amount(amount, unit)

    if gpus > ceiling:
        return FitResult(
            Fit.NEVER,
            f"request for {g(gpus)} GPUs can never fit pool {pool!r}: capacity {g(usage.capacity)}, team "
            f"{team!r} limit {g(limit)} (nominal {g(quota.nominal)}), "
            f"guaranteed to other teams {g(guaranteed_elsewhere)}",
        )
    used = usage.by_team.get(team, 0)
    if used + gpus > limit:
        return FitResult(
            Fit.QUOTA_FULL,
            f"team {team!r} holds {g(used)} of its limit {g(limit)} GPUs in pool {pool!r}",
        )
    room = usage.room_for(team, quotas)
    if gpus > room:
        return FitResult(
            Fit.CAPACITY_FULL,
            f"pool {pool!r} has room for {g(max(room, 0))} GPUs ({g(usage.used)}/{g(usage.capacity)} leased"
            + (f", back end reports {g(usage.observed_left)} free" if usage.observed_left is not None else "")
            + ")",
        )
    borrowed = max(0, used + gpus - quota.nominal) - max(0, used - quota.nominal)
    return FitResult(Fit.FITS, "", borrowed)


@dataclass(frozen=True)
class Admission:
    """One admitted request; ``kind`` says whether it went in order or as backfill."""

    key: str
    team: str
    pool: str
    gpus: int
    borrowed: int | float
    kind: str


@dataclass(frozen=True)
class Decision:
    """The policy's answer: who goes now (in order), whom to reclaim from, and why others wait."""

    admitted: tuple[Admission, ...]
    reclaim: tuple[str, ...]
    waiting: Mapping[str, str]
    impossible: Mapping[str, str]
    #: Position of every pending request in its pool's queue, as the policy ordered it.
    position: Mapping[str, int]

    @property
    def admitted_keys(self) -> tuple[str, ...]:
        return tuple(a.key for a in self.admitted)


def effective_priority(request: Pending, now: float, config: PolicyConfig) -> int:
    """Priority plus aging: one level per ``aging_seconds`` waited."""
    base = request.priority if config.priorities else 0
    if config.aging_seconds > 0:
        base += int(max(0.0, now - request.enqueued_at) // config.aging_seconds)
    return base


def dominant_shares(
    snapshot: Snapshot, usage: Mapping[str, PoolUsage], teams: Iterable[str]
) -> dict[str, float]:
    """Weighted dominant resource share per team (DRF over GPU pools).

    A team's share of a pool is its GPUs there over the pool's capacity; its dominant share
    is the largest of those, divided by its entitlement (its nominal GPUs over all capacity).
    """
    total_capacity = sum(p.capacity for p in snapshot.pools.values()) or 1
    nominal: dict[str, float] = {}
    for (team, _pool), quota in snapshot.quotas.items():
        nominal[team] = nominal.get(team, 0) + quota.nominal
    shares: dict[str, float] = {}
    for team in teams:
        weight = max(nominal.get(team, 0) / total_capacity, 1e-6)
        dominant = 0.0
        for pool_usage in usage.values():
            if pool_usage.capacity > 0:
                dominant = max(dominant, pool_usage.by_team.get(team, 0) / pool_usage.capacity)
        shares[team] = dominant / weight
    return shares


class _Profile:
    """Free GPUs of one pool over time, a step function, with the reservations made so far.

    Starts from the GPUs free now and adds each lease's GPUs back at its expiry; a
    reservation (or an admission) takes GPUs away over ``[start, start + runtime)``.
    """

    def __init__(self, now: float, free_now: int, releases: Iterable[tuple[float, int]]) -> None:
        self.now = now
        self.times: list[float] = [now]
        self.free: list[int] = [free_now]
        for when, gpus in sorted(releases):
            if math.isinf(when):
                continue
            when = max(when, now)
            if when == self.times[-1]:
                self.free[-1] += gpus
            else:
                self.times.append(when)
                self.free.append(self.free[-1] + gpus)

    def earliest_start(self, gpus: int, runtime: float | None) -> float:
        """First time ``gpus`` GPUs stay free for ``runtime`` seconds (``None``: for good)."""
        count = len(self.times)
        for i in range(count):
            if self.free[i] < gpus:
                continue
            end = math.inf if runtime is None else self.times[i] + runtime
            j = i + 1
            while j < count and self.times[j] < end and self.free[j] >= gpus:
                j += 1
            if j == count or self.times[j] >= end:
                return self.times[i]
        return math.inf

    def _split(self, when: float) -> int:
        index = bisect.bisect_right(self.times, when) - 1
        if self.times[index] == when:
            return index
        self.times.insert(index + 1, when)
        self.free.insert(index + 1, self.free[index])
        return index + 1

    def take(self, start: float, gpus: int, runtime: float | None) -> None:
        if math.isinf(start):
            return
        first = self._split(start)
        last = len(self.times) if runtime is None else self._split(start + runtime)
        for index in range(first, last):
            self.free[index] -= gpus


def _reclaim_for(
    head: Pending,
    head_priority: int,
    usage: PoolUsage,
    quotas: Mapping[str, Quota],
    running: Sequence[Running],
) -> list[str]:
    """Leases lent to borrowing teams that, once returned, let ``head`` in (youngest first).

    Only leases of no higher priority than the head's effective priority are taken: a
    higher-priority borrower would be admitted again ahead of the head and taken back again.
    """
    quota = quotas.get(head.team)
    if quota is None or usage.by_team.get(head.team, 0) + head.gpus > quota.nominal:
        return []
    already = sum(r.gpus for r in running if r.reclaim_requested)
    deficit = head.gpus - max(0, usage.room_for(head.team, quotas)) - already
    if deficit <= 0:
        return []
    borrowed_left = {
        team: used - quotas[team].nominal
        for team, used in usage.by_team.items()
        if team != head.team and team in quotas and used > quotas[team].nominal
    }
    chosen: list[str] = []
    for lease in sorted(running, key=lambda r: (-r.acquired_at, r.lease_id)):
        if deficit <= 0:
            break
        if lease.reclaim_requested or borrowed_left.get(lease.team, 0) <= 0 or lease.priority > head_priority:
            continue
        chosen.append(lease.lease_id)
        borrowed_left[lease.team] -= lease.gpus
        deficit -= lease.gpus
    return chosen if deficit <= 0 else []


def decide(snapshot: Snapshot, config: PolicyConfig | str = "fair") -> Decision:
    """Decide which pending requests to admit now, in admission order.

    Pools are decided one after another (by name); within a pool, requests are taken in
    the policy's order and each is admitted, held back behind a reservation, or left
    waiting (see :class:`_PoolRound`). Fair shares carry over from pool to pool.
    """
    state = _DecisionState.of(snapshot, get_policy(config))
    outcome = _Outcome()
    pending_by_pool: dict[str, list[Pending]] = {}
    for request in snapshot.pending:
        pending_by_pool.setdefault(request.pool, []).append(request)
    for pool_name in sorted(pending_by_pool):
        requests = pending_by_pool[pool_name]
        if pool_name not in state.usage:
            for request in requests:
                outcome.impossible[request.key] = f"pool {pool_name!r} is not registered in the ledger"
            continue
        _PoolRound(pool_name, requests, state, outcome).run()
    return outcome.decision()


@dataclass
class _DecisionState:
    """What one decision shares across pools: usage so far, lease ends and fair shares."""

    snapshot: Snapshot
    config: PolicyConfig
    usage: dict[str, PoolUsage]
    #: (expiry, GPUs) of each pool's running leases: when their GPUs come back.
    ends: dict[str, list[tuple[float, int]]]
    running: dict[str, list[Running]]
    quotas: dict[str, dict[str, Quota]]
    shares: dict[str, float]

    @classmethod
    def of(cls, snapshot: Snapshot, config: PolicyConfig) -> _DecisionState:
        usage: dict[str, PoolUsage] = {}
        ends: dict[str, list[tuple[float, int]]] = {}
        for name, pool in snapshot.pools.items():
            usage[name] = PoolUsage(
                capacity=pool.capacity, observed_left=pool.observed_free, unit=snapshot.unit
            )
            ends[name] = []
        running: dict[str, list[Running]] = {}
        for lease in snapshot.running:
            pool_usage = usage.get(lease.pool)
            if pool_usage is None:
                continue
            pool_usage.used += lease.gpus
            pool_usage.by_team[lease.team] = pool_usage.by_team.get(lease.team, 0) + lease.gpus
            ends[lease.pool].append((lease.expires_at, lease.gpus))
            running.setdefault(lease.pool, []).append(lease)
        quotas: dict[str, dict[str, Quota]] = {}
        for (team, pool_name), quota in snapshot.quotas.items():
            quotas.setdefault(pool_name, {})[team] = quota
        teams = {t for t, _ in snapshot.quotas} | {r.team for r in snapshot.pending}
        shares = dominant_shares(snapshot, usage, teams) if config.fair_share else {}
        return cls(snapshot, config, usage, ends, running, quotas, shares)


@dataclass
class _Outcome:
    admitted: list[Admission] = field(default_factory=list)
    reclaim: list[str] = field(default_factory=list)
    waiting: dict[str, str] = field(default_factory=dict)
    impossible: dict[str, str] = field(default_factory=dict)
    position: dict[str, int] = field(default_factory=dict)

    def decision(self) -> Decision:
        return Decision(
            admitted=tuple(self.admitted),
            reclaim=tuple(self.reclaim),
            waiting=self.waiting,
            impossible=self.impossible,
            position=self.position,
        )


def _team_queues(
    requests: Sequence[Pending], eff: Mapping[str, int], config: PolicyConfig
) -> dict[str, deque[Pending]]:
    """One queue per team, in priority then arrival order; for strict FIFO, one for the pool."""
    queues: dict[str, deque[Pending]] = {}
    for request in sorted(requests, key=lambda r: (-eff[r.key], r.enqueued_at, r.key)):
        line = "" if config.head_of_line_blocking else request.team
        queues.setdefault(line, deque()).append(request)
    return queues


class _PoolRound:
    """One pool's pending requests, taken in the policy's order and each decided in turn.

    Steps per request: the next in line (:meth:`_ranking`); stop at a blocked head (FIFO);
    check it against capacity and quota; a request that fits is admitted unless it would
    delay a reservation (:meth:`_holds_back`); one that does not fit waits, blocks the line
    or reserves GPUs for when it fits (:meth:`_wait`).
    """

    def __init__(
        self, name: str, requests: Sequence[Pending], state: _DecisionState, outcome: _Outcome
    ) -> None:
        config = state.config
        self.name = name
        self.state = state
        self.outcome = outcome
        self.config = config
        self.now = state.snapshot.now
        self.usage = state.usage[name]
        self.quotas = state.quotas.get(name, {})
        self.eff = {r.key: effective_priority(r, self.now, config) for r in requests}
        self.queues = _team_queues(requests, self.eff, config)
        free_now = self.usage.capacity - self.usage.used
        if self.usage.observed_left is not None:
            free_now = min(free_now, self.usage.observed_left)
        self.profile = _Profile(self.now, free_now, state.ends[name])
        self.reserved: list[str] = []
        self.blocked_head: str | None = None

    def run(self) -> None:
        rank = self._ranking()
        queues = self.queues
        index = 0
        while queues:
            # The head of the team queue that goes first: priority, then virtual time.
            best_team = min(queues, key=rank)
            request = queues[best_team].popleft()
            if not queues[best_team]:
                del queues[best_team]
            self.outcome.position[request.key] = index
            index += 1
            self._decide(request)

    def _ranking(self) -> Callable[[str], tuple[int, float, str]]:
        """Where a team's queue head stands in line (lowest first)."""
        queues, eff, shares = self.queues, self.eff, self.state.shares
        usage, quotas, config = self.usage, self.quotas, self.config

        def rank(team: str) -> tuple[int, float, str]:
            head = queues[team][0]
            return -eff[head.key], _virtual_time(head, shares.get(team, 0.0), usage, quotas, config), head.key

        return rank

    def _decide(self, request: Pending) -> None:
        if self.blocked_head is not None:
            self.outcome.waiting[request.key] = f"queued behind {self.blocked_head}"
            return
        result = check_fit(
            self.usage,
            self.quotas,
            pool=self.name,
            team=request.team,
            gpus=request.gpus,
            borrowing=self.config.borrowing,
        )
        if result.fit.is_permanent():
            self.outcome.impossible[request.key] = result.reason
        elif result.fit is Fit.FITS:
            if not self._holds_back(request):
                self._admit(request, result)
        else:
            self._wait(request, result)

    def _holds_back(self, request: Pending) -> bool:
        """Whether a request that fits now must wait so as not to delay a reservation."""
        if not (self.config.backfill and self.reserved):
            return False
        start = self.profile.earliest_start(request.gpus, request.max_runtime)
        if start <= self.now:
            return False
        reserved = self.reserved
        self.outcome.waiting[request.key] = (
            f"would delay {reserved[0]}"
            + (f" and {len(reserved) - 1} more reserved request(s)" if len(reserved) > 1 else "")
            + f"; fits from {_fmt_time(start, self.now)}"
        )
        if len(reserved) < self.config.reservations:
            self.profile.take(start, request.gpus, request.max_runtime)
            reserved.append(request.key)
        return True

    def _admit(self, request: Pending, result: FitResult) -> None:
        self.usage.add(request.team, request.gpus)
        self.profile.take(self.now, request.gpus, request.max_runtime)
        if self.config.fair_share:
            shares = dominant_shares(self.state.snapshot, self.state.usage, [request.team])
            self.state.shares[request.team] = shares[request.team]
        kind = "backfill" if self.reserved else "in_order"
        self.outcome.admitted.append(
            Admission(request.key, request.team, self.name, request.gpus, result.borrowed, kind)
        )

    def _wait(self, request: Pending, result: FitResult) -> None:
        """A request that does not fit: it blocks the line (FIFO) or reserves GPUs."""
        config = self.config
        self.outcome.waiting[request.key] = result.reason
        if config.head_of_line_blocking or (result.fit is Fit.CAPACITY_FULL and not config.backfill):
            self.blocked_head = request.key
            return
        if result.fit is not Fit.CAPACITY_FULL or len(self.reserved) >= config.reservations:
            return
        start = self.profile.earliest_start(request.gpus, request.max_runtime)
        self.profile.take(start, request.gpus, request.max_runtime)
        if (
            not self.reserved
            and config.reclaim
            and config.borrowing
            and self.now - request.enqueued_at >= config.reclaim_after
        ):
            self.outcome.reclaim.extend(
                _reclaim_for(
                    request,
                    self.eff[request.key],
                    self.usage,
                    self.quotas,
                    self.state.running.get(self.name, []),
                )
            )
        self.reserved.append(request.key)
        self.outcome.waiting[request.key] = (
            f"{result.reason}; GPUs reserved from {_fmt_time(start, self.now)}"
        )


def _virtual_time(
    request: Pending, share: float, usage: PoolUsage, quotas: Mapping[str, Quota], config: PolicyConfig
) -> float:
    """Where a request lines up within its priority level: enqueue time plus fairness delays.

    Borrowing requests line up behind requests within their team's nominal quota, so GPUs
    reclaimed for a team are not taken straight back by the borrower they came from.
    """
    if config.head_of_line_blocking:
        return request.enqueued_at
    delay = config.fair_share_delay * share if config.fair_share else 0.0
    quota = quotas.get(request.team)
    nominal = quota.nominal if quota is not None else 0
    if usage.by_team.get(request.team, 0) + request.gpus > nominal:
        delay += config.borrow_delay
    return request.enqueued_at + delay


def _fmt_time(shadow: float, now: float) -> str:
    if math.isinf(shadow):
        return "an unknown time"
    return f"{shadow - now:.0f}s from now"
