from __future__ import annotations

import pytest
from nuro_ml.capacity.policy import (
    Fit,
    Pending,
    PolicyConfig,
    PoolUsage,
    PoolView,
    Running,
    Snapshot,
    check_fit,
    decide,
    get_policy,
)
from nuro_ml.capacity.records import LeaseRequest, Quota
from nuro_ml.exceptions import CapacityError

NOW = 1_000_000.0


def snap(capacity=8, quotas=(), running=(), pending=(), observed_free=None, now=NOW):
    return Snapshot(
        now=now,
        pools={"p": PoolView("p", capacity, observed_free)},
        quotas={(q.team, q.pool): q for q in quotas},
        running=tuple(running),
        pending=tuple(pending),
    )


def q(team, nominal, borrowing=None, lending=None, pool="p"):
    return Quota(team=team, pool=pool, nominal=nominal, borrowing_limit=borrowing, lending_limit=lending)


def run(lease_id, team, gpus, *, acquired=NOW - 100, expires=NOW + 1000, pool="p"):
    return Running(lease_id, f"key-{lease_id}", team, pool, gpus, acquired, expires)


def req(key, team, gpus, *, enq=NOW - 10, prio=0, runtime=None, nodes=1, pool="p"):
    return Pending(key, team, pool, gpus, enq, nodes=nodes, priority=prio, max_runtime=runtime)


def test_higher_priority_goes_first():
    decision = decide(
        snap(
            4, [q("a", 4), q("b", 4)], pending=[req("low", "a", 4, enq=NOW - 50), req("high", "b", 4, prio=5)]
        )
    )
    assert decision.admitted_keys == ("high",)
    assert "low" in decision.waiting


def test_fair_share_prefers_team_below_its_entitlement():
    # Team a already borrows 2 GPUs over its nominal 4; b uses nothing. Only 2 GPUs are free.
    decision = decide(
        snap(
            8,
            [q("a", 4), q("b", 4)],
            running=[run("l1", "a", 6)],
            pending=[req("a-first", "a", 2, enq=NOW - 60), req("b-later", "b", 2, enq=NOW - 5)],
        )
    )
    assert decision.admitted_keys == ("b-later",)
    assert decide(
        snap(
            8,
            [q("a", 4), q("b", 4)],
            running=[run("l1", "a", 6)],
            pending=[req("a-first", "a", 2, enq=NOW - 60), req("b-later", "b", 2, enq=NOW - 5)],
        ),
        "fifo",
    ).admitted_keys == ("a-first",)


def test_borrowing_idle_quota_within_limits():
    decision = decide(snap(4, [q("a", 2, borrowing=1), q("b", 2)], pending=[req("r", "a", 3)]))
    assert [(a.key, a.borrowed) for a in decision.admitted] == [("r", 1)]

    too_big = decide(snap(4, [q("a", 2, borrowing=1), q("b", 2)], pending=[req("r", "a", 4)]))
    assert too_big.admitted == ()
    assert "limit 3" in too_big.impossible["r"]

    no_borrowing = decide(
        snap(4, [q("a", 2), q("b", 2)], pending=[req("r", "a", 3)]), PolicyConfig(borrowing=False)
    )
    assert "r" in no_borrowing.impossible


def test_lending_limit_keeps_guaranteed_gpus_for_their_team():
    quotas = [q("a", 2), q("b", 2, lending=0)]
    assert "r" in decide(snap(4, quotas, pending=[req("r", "a", 3)])).impossible
    assert decide(snap(4, quotas, pending=[req("r", "a", 2)])).admitted_keys == ("r",)
    # b's guaranteed GPUs are for b even when a asks first.
    decision = decide(snap(4, quotas, running=[run("l", "a", 2)], pending=[req("r", "a", 1)]))
    assert decision.admitted == () and "room for 0" in decision.waiting["r"]


def test_backfill_never_delays_the_head_of_the_queue():
    # 6 of 10 GPUs busy until NOW+100; the head needs all 10, so it is reserved for NOW+100.
    state = snap(
        10,
        [q("a", 10), q("b", 10)],
        running=[run("l", "a", 6, expires=NOW + 100)],
        pending=[
            req("head", "b", 10, enq=NOW - 30, runtime=3600),
            req("short", "a", 2, enq=NOW - 20, runtime=50),
            req("long", "a", 2, enq=NOW - 10, runtime=500),
        ],
    )
    decision = decide(state)
    assert decision.admitted_keys == ("short",)
    assert [a.kind for a in decision.admitted] == ["backfill"]
    assert "would delay head" in decision.waiting["long"]
    # The reference scheduler blocks everything behind the head.
    assert decide(state, "fifo").admitted == ()


def test_backfill_uses_gpus_the_head_will_not_need():
    state = snap(
        8,
        [q("a", 8), q("b", 8)],
        running=[run("l", "a", 6, expires=NOW + 100)],
        pending=[req("head", "a", 4, enq=NOW - 30), req("long", "b", 2, enq=NOW - 10, runtime=10_000)],
    )
    # At the head's shadow time 8 GPUs are free and it needs 4: 2 can be lent now.
    assert decide(state).admitted_keys == ("long",)


def test_gang_request_is_admitted_whole_or_not_at_all():
    waiting = decide(snap(8, [q("a", 8)], running=[run("l", "a", 2)], pending=[req("gang", "a", 8, nodes=2)]))
    assert waiting.admitted == ()
    admitted = decide(snap(8, [q("a", 8)], pending=[req("gang", "a", 8, nodes=2)]))
    assert [(a.key, a.gpus) for a in admitted.admitted] == [("gang", 8)]
    with pytest.raises(CapacityError, match="split evenly"):
        LeaseRequest(key="k", team="a", pool="p", gpus=5, nodes=2)


def test_aging_lets_a_long_waiting_request_overtake_higher_priority():
    state = snap(
        4,
        [q("a", 4), q("b", 4)],
        pending=[req("old-low", "a", 4, enq=NOW - 4 * 3600, prio=0), req("new-high", "b", 4, prio=3)],
    )
    assert decide(state, PolicyConfig(aging_seconds=1800)).admitted_keys == ("old-low",)
    assert decide(state, PolicyConfig(aging_seconds=0)).admitted_keys == ("new-high",)


def test_reclaim_returns_borrowed_gpus_to_a_team_within_its_nominal_quota():
    state = snap(
        4,
        [q("a", 2), q("b", 2)],
        running=[run("old", "a", 2, acquired=NOW - 500), run("young", "a", 2, acquired=NOW - 50)],
        pending=[req("b-job", "b", 2, enq=NOW - 700)],
    )
    decision = decide(state, "fair-reclaim")
    assert decision.admitted == ()
    assert decision.reclaim == ("young",)
    assert decide(state).reclaim == ()  # reclaim is opt-in
    # Nothing more is reclaimed while the lease is handing its GPUs back.
    marked = snap(
        4,
        [q("a", 2), q("b", 2)],
        running=[
            run("old", "a", 2, acquired=NOW - 500),
            Running("young", "key-young", "a", "p", 2, NOW - 50, NOW + 300, reclaim_requested=True),
        ],
        pending=[req("b-job", "b", 2, enq=NOW - 700)],
    )
    assert decide(marked, "fair-reclaim").reclaim == ()
    # A short wait does not disturb running work.
    fresh = snap(
        4, [q("a", 2), q("b", 2)], running=[run("y", "a", 4)], pending=[req("b-job", "b", 2, enq=NOW - 60)]
    )
    assert decide(fresh, "fair-reclaim").reclaim == ()
    # A team asking beyond its own nominal quota cannot reclaim.
    beyond = snap(
        4, [q("a", 2), q("b", 1)], running=[run("x", "a", 3)], pending=[req("b-job", "b", 2, enq=NOW - 700)]
    )
    assert decide(beyond, "fair-reclaim").reclaim == ()
    # Higher-priority borrowers keep their GPUs (they would be admitted again ahead of b).
    urgent = Running("u", "key-u", "a", "p", 4, NOW - 50, NOW + 1000, priority=5)
    assert (
        decide(
            snap(4, [q("a", 2), q("b", 2)], running=[urgent], pending=[req("b-job", "b", 2, enq=NOW - 700)]),
            "fair-reclaim",
        ).reclaim
        == ()
    )


def test_backend_free_gpus_cap_what_is_admitted():
    # The ledger thinks 4 GPUs are free, the cluster reports 1 (something else runs there).
    decision = decide(snap(4, [q("a", 4)], pending=[req("two", "a", 2), req("one", "a", 1)], observed_free=1))
    assert decision.admitted_keys == ("one",)


def test_one_decision_never_oversubscribes():
    pending = [req(f"r{i}", "ab"[i % 2], 1 + i % 3, enq=NOW - i) for i in range(40)]
    decision = decide(snap(10, [q("a", 5), q("b", 5)], pending=pending))
    assert sum(a.gpus for a in decision.admitted) <= 10
    assert len(decision.position) == 40


def test_check_fit_reports_why():
    usage = PoolUsage.from_leases(4, [("a", 3)])
    quotas = {"a": q("a", 4)}
    assert check_fit(usage, quotas, pool="p", team="a", gpus=1).fit is Fit.FITS
    assert check_fit(usage, quotas, pool="p", team="a", gpus=2).fit is Fit.QUOTA_FULL
    assert check_fit(usage, quotas, pool="p", team="z", gpus=1).fit is Fit.NO_QUOTA
    assert check_fit(usage, quotas, pool="p", team="a", gpus=5).fit is Fit.NEVER


def test_unknown_policy_name():
    with pytest.raises(CapacityError, match="unknown admission policy 'lifo'"):
        get_policy("lifo")
