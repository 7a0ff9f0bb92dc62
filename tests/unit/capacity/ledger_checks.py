"""Concurrent acquire/release workload and the invariants it must keep (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from hypothesis import strategies as st
from nuro_ml.capacity.ledger import QuotaLedger
from nuro_ml.capacity.records import Lease, LeaseRequest, LeaseState
from nuro_ml.exceptions import QuotaExceededError

#: One operation of a worker: (team index, GPUs, release it afterwards, acquire twice).
Op = tuple[int, int, bool, bool]

TEAMS = ("perception", "planning", "mapping")

ops_strategy = st.lists(
    st.tuples(st.integers(0, 2), st.integers(1, 4), st.booleans(), st.booleans()), min_size=1, max_size=6
)


@dataclass
class Outcome:
    acquired: dict[str, Lease] = field(default_factory=dict)
    released: set[str] = field(default_factory=set)
    reacquire_mismatch: list[tuple[str, str]] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def setup_pool(ledger: QuotaLedger, capacity: int, nominals: Sequence[int], borrowing: int | None) -> str:
    pool = f"pool-{uuid.uuid4().hex[:10]}"
    ledger.upsert_pool(pool, capacity=capacity)
    for team, nominal in zip(TEAMS, nominals, strict=True):
        ledger.upsert_quota(team, pool, nominal=nominal, borrowing_limit=borrowing)
    return pool


def run_workers(url: str, pool: str, plans: Sequence[Sequence[Op]]) -> Outcome:
    """Every plan runs in its own thread with its own ledger object, all started together."""
    outcome = Outcome()
    barrier = threading.Barrier(len(plans))

    def work(worker: int, plan: Sequence[Op]) -> None:
        ledger = QuotaLedger(url)
        try:
            barrier.wait()
            for step, (team, gpus, release, twice) in enumerate(plan):
                request = LeaseRequest(
                    key=f"{pool}/w{worker}/s{step}", team=TEAMS[team], pool=pool, gpus=gpus
                )
                try:
                    lease = ledger.try_acquire(request)
                except QuotaExceededError:
                    # Larger than the team's limit or the pool: refused outright, as designed.
                    continue
                if lease is None:
                    continue
                with outcome.lock:
                    outcome.acquired[lease.lease_id] = lease
                if twice:
                    again = ledger.try_acquire(request)
                    if again is None or again.lease_id != lease.lease_id:
                        with outcome.lock:
                            outcome.reacquire_mismatch.append(
                                (lease.lease_id, getattr(again, "lease_id", ""))
                            )
                if release:
                    ledger.release(lease.lease_id)
                    ledger.release(lease.lease_id)
                    with outcome.lock:
                        outcome.released.add(lease.lease_id)
        except BaseException as err:
            with outcome.lock:
                outcome.errors.append(err)

    threads = [threading.Thread(target=work, args=(i, plan)) for i, plan in enumerate(plans)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return outcome


def peak_usage(leases: Sequence[Lease]) -> tuple[int, dict[str, int]]:
    """Largest GPUs held at once, overall and per team, from the stored lease intervals.

    Lease timestamps are taken under the pool lock, so their order is the order in which the
    ledger granted and took back GPUs.
    """
    events: list[tuple[float, int, str, int]] = []
    for lease in leases:
        end = lease.released_at if lease.state is LeaseState.RELEASED else None
        if lease.state is LeaseState.EXPIRED:
            end = lease.expires_at
        events.append((lease.acquired_at.timestamp(), 1, lease.team, lease.gpus))
        if end is not None:
            # Returns sort before grants at the same instant (0 < 1).
            events.append((end.timestamp(), 0, lease.team, -lease.gpus))
    events.sort()
    total = 0
    peak = 0
    per_team: dict[str, int] = {}
    peak_team: dict[str, int] = {}
    for _t, _order, team, delta in events:
        total += delta
        per_team[team] = per_team.get(team, 0) + delta
        peak = max(peak, total)
        peak_team[team] = max(peak_team.get(team, 0), per_team[team])
    return peak, peak_team


def check_invariants(
    ledger: QuotaLedger,
    pool: str,
    capacity: int,
    nominals: Sequence[int],
    borrowing: int | None,
    outcome: Outcome,
) -> None:
    assert outcome.errors == []
    assert outcome.reacquire_mismatch == []
    stored = {lease.lease_id: lease for lease in ledger.leases(pool=pool)}
    # No lease lost or invented: every grant is stored, and only grants are stored.
    assert set(stored) == set(outcome.acquired)
    for lease_id, lease in stored.items():
        expected = LeaseState.RELEASED if lease_id in outcome.released else LeaseState.ACTIVE
        assert lease.state is expected, (lease_id, lease.state)
    peak, peak_team = peak_usage(list(stored.values()))
    assert peak <= capacity
    for team, nominal in zip(TEAMS, nominals, strict=True):
        limit = max(nominal, capacity) if borrowing is None else nominal + borrowing
        assert peak_team.get(team, 0) <= limit, (team, peak_team.get(team), limit)
    active = sum(lease.gpus for lease in stored.values() if lease.active)
    assert active <= capacity
