from __future__ import annotations

import pytest
from nuro_ml.capacity.policy import Pending, PoolView, Running, Snapshot, decide
from nuro_ml.capacity.reasons import WaitReason, classify, count_by_reason
from nuro_ml.capacity.records import Quota

NOW = 1_000_000.0


def _snapshot() -> Snapshot:
    return Snapshot(
        now=NOW,
        pools={"p": PoolView("p", 8), "q": PoolView("q", 4), "r": PoolView("r", 4)},
        quotas={
            ("a", "p"): Quota("a", "p", nominal=4, borrowing_limit=0),
            ("b", "p"): Quota("b", "p", nominal=4),
            ("c", "q"): Quota("c", "q", nominal=2),
            ("d", "q"): Quota("d", "q", nominal=2),
            ("e", "r"): Quota("e", "r", nominal=2),
            ("f", "r"): Quota("f", "r", nominal=2),
        },
        running=[
            Running("l1", "k-l1", "a", "p", 4, NOW - 60, NOW + 3600),
            Running("l2", "k-l2", "d", "q", 3, NOW - 60, NOW + 3600),
            Running("l3", "k-l3", "f", "r", 2, NOW - 60, NOW + 3600),
        ],
        pending=[
            Pending("a-over-quota", "a", "p", 2, NOW - 500),
            Pending("b-first", "b", "p", 4, NOW - 400, priority=5),
            Pending("b-second", "b", "p", 2, NOW - 300),
            Pending("b-huge", "b", "p", 16, NOW - 300),
            Pending("c-short", "c", "q", 2, NOW - 200),
            Pending("e-big", "e", "r", 4, NOW - 200, max_runtime=3600),
            Pending("e-small", "e", "r", 2, NOW - 100, max_runtime=7200),
        ],
    )


def test_each_waiting_request_gets_the_reason_the_policy_implies() -> None:
    snapshot = _snapshot()
    decision = decide(snapshot, "fair")
    assert decision.admitted_keys == ("b-first",)
    records = classify(snapshot, decision, "fair")

    assert records["a-over-quota"].reason is WaitReason.QUOTA_LIMIT
    assert "limit 4" in records["a-over-quota"].message
    assert records["b-second"].reason is WaitReason.BEHIND_REQUESTS
    assert records["b-second"].gpus_ahead == 4
    assert "behind 4 GPUs" in records["b-second"].message
    assert records["b-huge"].reason is WaitReason.NEVER_FITS
    assert records["c-short"].reason is WaitReason.POOL_SHORT
    assert records["e-big"].reason is WaitReason.POOL_SHORT
    assert records["e-small"].reason is WaitReason.BACKFILL_HELD
    assert "would delay e-big" in records["e-small"].message
    assert "b-first" not in records
    assert count_by_reason(records)[WaitReason.POOL_SHORT] == 2


def test_unreachable_back_end_overrides_the_capacity_reason() -> None:
    snapshot = _snapshot()
    decision = decide(snapshot, "fair")
    records = classify(snapshot, decision, "fair", unreachable={"r": "connection refused"})
    assert records["e-big"].reason is WaitReason.BACKEND_UNREACHABLE
    assert "connection refused" in records["e-small"].message
    assert records["c-short"].reason is WaitReason.POOL_SHORT


def test_fifo_head_of_line_blocking_puts_later_requests_behind() -> None:
    snapshot = Snapshot(
        now=NOW,
        pools={"r": PoolView("r", 4)},
        quotas={("e", "r"): Quota("e", "r", nominal=2), ("f", "r"): Quota("f", "r", nominal=2)},
        running=[Running("l3", "k-l3", "f", "r", 2, NOW - 60, NOW + 3600)],
        pending=[Pending("big", "e", "r", 4, NOW - 200), Pending("small", "e", "r", 1, NOW - 100)],
    )
    records = classify(snapshot, decide(snapshot, "fifo"), "fifo")
    assert records["big"].reason is WaitReason.POOL_SHORT
    assert records["small"].reason is WaitReason.BEHIND_REQUESTS
    assert records["small"].gpus_ahead == 4


@pytest.mark.parametrize("reason", list(WaitReason))
def test_reason_codes_are_snake_case_label_values(reason: WaitReason) -> None:
    assert reason.value.isidentifier() and reason.value.islower()


def test_reason_log_reports_only_changes_of_code_or_gpus_ahead() -> None:
    from nuro_ml.capacity.reasons import ReasonLog, WaitRecord

    log = ReasonLog()
    short = WaitRecord(WaitReason.POOL_SHORT, "pool 'p' has room for 0 GPUs; fits from 100s from now")
    assert log.changed("k", short)
    assert not log.changed("k", WaitRecord(WaitReason.POOL_SHORT, "fits from 90s from now"))
    assert log.changed("k", WaitRecord(WaitReason.BEHIND_REQUESTS, "behind", gpus_ahead=4))
    assert log.changed("k", WaitRecord(WaitReason.BEHIND_REQUESTS, "behind", gpus_ahead=2))
    log.forget("k")
    assert log.changed("k", WaitRecord(WaitReason.BEHIND_REQUESTS, "behind", gpus_ahead=2))
