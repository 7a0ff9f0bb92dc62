"""Why a request waits: one machine-readable code per waiting request, with its sentence.

Kueue's model: a workload that is not admitted carries a condition with a reason and a
message. :class:`WaitReason` is the closed set of codes (it labels the
``nuro_ml_capacity_pending_requests`` series, so it must stay small), :class:`WaitRecord`
the code plus the human sentence, and :func:`classify` derives both from an admission
:class:`~nuro_ml.capacity.policy.Decision` and the :class:`~nuro_ml.capacity.policy.Snapshot`
it was made from, without changing how the policy decides.

The classifier replays the decision pool by pool in the policy's queue order (``position``):
a request that would fit the pool as the leases leave it, but not after the GPUs admitted
ahead of it in the same decision, waits *behind* them; one that fits even then but is not
admitted is *held by backfill* (admitting it would delay a reserved request), or behind a
blocked head under strict FIFO.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum

from nuro_ml.capacity.policy import (
    Decision,
    Fit,
    Pending,
    PolicyConfig,
    PoolUsage,
    Snapshot,
    check_fit,
    get_policy,
    gpu_amount,
)
from nuro_ml.capacity.records import Quota


class WaitReason(StrEnum):
    """Why a request is not admitted now (the ``reason`` label of the pending series)."""

    #: The team holds its nominal quota plus what it may borrow.
    QUOTA_LIMIT = "quota_limit"
    #: The pool has too few free GPUs (leased, or guaranteed to other teams' idle quota).
    POOL_SHORT = "pool_short"
    #: The pool would have room, but higher-priority or older requests take it first.
    BEHIND_REQUESTS = "behind_requests"
    #: A multi-node request whose gang cannot be placed on the nodes at once.
    GANG_UNPLACEABLE = "gang_unplaceable"
    #: It fits now, but admitting it would delay a request holding a reservation.
    BACKFILL_HELD = "backfill_held"
    #: The capacity back end could not be read, so nothing is admitted in its pool.
    BACKEND_UNREACHABLE = "backend_unreachable"
    #: It can never be admitted as configured (no quota, no pool, larger than any limit).
    NEVER_FITS = "never_fits"


@dataclass(frozen=True)
class WaitRecord:
    """A waiting request's reason: the code, the sentence, and the GPUs queued ahead of it."""

    reason: WaitReason
    message: str
    gpus_ahead: int = 0

    def to_dict(self) -> dict[str, object]:
        return {"reason": self.reason.value, "message": self.message, "gpus_ahead": self.gpus_ahead}


def classify(
    snapshot: Snapshot,
    decision: Decision,
    config: PolicyConfig | str = "fair",
    *,
    unreachable: Mapping[str, str] | None = None,
) -> dict[str, WaitRecord]:
    """A :class:`WaitRecord` for every request ``decision`` leaves waiting or rejects.

    :param snapshot: What the decision was made from.
    :param decision: The policy's answer for ``snapshot`` under ``config``.
    :param config: The policy (preset name or config) that made ``decision``.
    :param unreachable: Pool name -> error, for pools whose back end could not be read; every
        request waiting in such a pool gets :attr:`WaitReason.BACKEND_UNREACHABLE`.
    """
    config = get_policy(config)
    unreachable = unreachable or {}
    records: dict[str, WaitRecord] = {
        key: WaitRecord(WaitReason.NEVER_FITS, message) for key, message in decision.impossible.items()
    }
    admitted = {a.key: a for a in decision.admitted}

    by_pool: dict[str, list[str]] = {}
    pending = {p.key: p for p in snapshot.pending}
    for request in snapshot.pending:
        if request.key in decision.waiting:
            by_pool.setdefault(request.pool, [])
    for key in sorted(pending, key=lambda k: (decision.position.get(k, 0), k)):
        if pending[key].pool in by_pool:
            by_pool[pending[key].pool].append(key)

    quotas_by_pool: dict[str, dict[str, Quota]] = {}
    for (team, pool_name), quota in snapshot.quotas.items():
        quotas_by_pool.setdefault(pool_name, {})[team] = quota

    for pool_name, keys in by_pool.items():
        view = snapshot.pools.get(pool_name)
        if view is None:
            continue
        if pool_name in unreachable:
            for key in keys:
                if key in decision.waiting:
                    records[key] = WaitRecord(
                        WaitReason.BACKEND_UNREACHABLE,
                        f"capacity back end of pool {pool_name!r} unreachable: {unreachable[pool_name]}",
                    )
            continue
        leases = [(r.team, r.gpus) for r in snapshot.running if r.pool == pool_name]
        base = PoolUsage.from_leases(view.capacity, leases, view.observed_free, unit=snapshot.unit)
        current = PoolUsage.from_leases(view.capacity, leases, view.observed_free, unit=snapshot.unit)
        quotas = quotas_by_pool.get(pool_name, {})
        ahead_gpus = 0
        blocked = False
        for key in keys:
            request = pending[key]
            if key in admitted:
                current.add(request.team, request.gpus)
                ahead_gpus += request.gpus
                continue
            if key not in decision.waiting:
                continue
            message = decision.waiting[key]
            # Amounts are in 1/unit GPUs (milli-GPUs from the ledger); records count whole GPUs.
            ahead = gpu_amount(ahead_gpus, snapshot.unit)
            whole_ahead = math.ceil(ahead_gpus / snapshot.unit)
            if blocked:
                records[key] = WaitRecord(
                    WaitReason.BEHIND_REQUESTS, f"{message} ({ahead} GPUs ahead)", whole_ahead
                )
                ahead_gpus += request.gpus
                continue

            now_fit = _fit(current, quotas, pool_name, request, config)
            if now_fit is Fit.FITS:
                records[key] = WaitRecord(WaitReason.BACKFILL_HELD, message, whole_ahead)
            elif now_fit is Fit.QUOTA_FULL:
                records[key] = WaitRecord(WaitReason.QUOTA_LIMIT, message, whole_ahead)
            elif ahead_gpus > 0 and _fit(base, quotas, pool_name, request, config) is Fit.FITS:
                records[key] = WaitRecord(
                    WaitReason.BEHIND_REQUESTS,
                    f"behind {ahead} GPUs of higher-priority or older requests in pool "
                    f"{pool_name!r}; {message}",
                    whole_ahead,
                )
            else:
                records[key] = WaitRecord(WaitReason.POOL_SHORT, message, whole_ahead)
            if config.head_of_line_blocking or (now_fit is Fit.CAPACITY_FULL and not config.backfill):
                blocked = True
            # A request held by its own quota claims none of the pool's GPUs ahead of others.
            if now_fit is not Fit.QUOTA_FULL:
                ahead_gpus += request.gpus
    return records


def _fit(
    usage: PoolUsage, quotas: Mapping[str, Quota], pool: str, request: Pending, config: PolicyConfig
) -> Fit:
    return check_fit(
        usage, quotas, pool=pool, team=request.team, gpus=request.gpus, borrowing=config.borrowing
    ).fit


def count_by_reason(
    records: Mapping[str, WaitRecord], keys: Collection[str] | None = None
) -> dict[WaitReason, int]:
    """How many of ``keys`` (default: all) wait for each reason."""
    counts: dict[WaitReason, int] = {}
    for key, record in records.items():
        if keys is None or key in keys:
            counts[record.reason] = counts.get(record.reason, 0) + 1
    return counts


class ReasonLog:
    """The reason last reported per request, so a waiter logs a reason only when it changes.

    Changes are the code or the GPUs ahead; the sentence alone (which carries times such as
    "fits from 120s from now") changes on every poll and would flood the task log.
    """

    def __init__(self) -> None:
        self._last: dict[str, tuple[WaitReason, int]] = {}

    def changed(self, key: str, record: WaitRecord) -> bool:
        """Remember ``record`` for ``key``; true when it differs from the last one (or is the first)."""
        state = (record.reason, record.gpus_ahead)
        if self._last.get(key) == state:
            return False
        self._last[key] = state
        return True

    def forget(self, key: str) -> None:
        self._last.pop(key, None)
