"""Why a request waits: stored by the admission round, shown by the CLI and the page data."""

from __future__ import annotations

import json

import pytest
from nuro_ml.capacity.admission import admission_round, record_unreachable
from nuro_ml.capacity.ledger import QuotaLedger
from nuro_ml.capacity.reasons import WaitReason, WaitRecord
from nuro_ml.capacity.records import LeaseRequest, RequestState
from nuro_ml.cli import main
from nuro_ml.ui.capacity_data import overview

from tests.unit.capacity.reason_queue import ADMITTED, EXPECTED, build_reason_queue


def test_admission_round_stores_each_waiting_requests_reason(ledger_url: str) -> None:
    ledger = build_reason_queue(ledger_url)
    stored = {r.key: r for r in ledger.requests(state=RequestState.WAITING)}
    assert {key: r.wait_reason for key, r in stored.items()} == EXPECTED
    behind = stored["planning_train/run_2/gate/-1"]
    assert behind.gpus_ahead == 4
    assert behind.wait_message is not None
    assert behind.wait_message.startswith("behind 4 GPUs of higher-priority or older requests in pool 'a100'")
    over = stored["perception_train/run_1/gate/-1"].wait_message
    assert over == "team 'perception' holds 4 of its limit 4 GPUs in pool 'a100'"
    assert "pool 'h100' has room for 2 GPUs" in (stored["mapping_train/run_1/gate/-1"].wait_message or "")
    assert ledger.active_lease(ADMITTED) is not None


def test_reasons_are_written_only_when_they_change(ledger_url: str) -> None:
    ledger = build_reason_queue(ledger_url)
    key = "mapping_train/run_1/gate/-1"
    same = ledger.requests(key=key)[0]
    record = WaitRecord(WaitReason.POOL_SHORT, same.wait_message or "", 0)
    assert ledger.record_wait_reasons({key: record}) == set()
    assert ledger.record_wait_reasons({key: WaitRecord(WaitReason.POOL_SHORT, "new sentence", 0)}) == set()
    assert ledger.requests(key=key)[0].wait_message == "new sentence"
    # Keys that no longer wait are left alone.
    assert ledger.record_wait_reasons({ADMITTED: record, "unknown/key": record}) == set()
    assert ledger.requests(key=ADMITTED)[0].wait_reason is None

    request = LeaseRequest(key=key, team="mapping", pool="h100", gpus=3)
    assert set(record_unreachable(ledger, [request], "connection refused")) == {key}
    row = ledger.requests(key=key)[0]
    assert (row.wait_reason, row.wait_message) == (
        "backend_unreachable",
        "capacity back end of pool 'h100' unreachable: connection refused",
    )
    # The next round that reaches the back end puts the real reason back.
    admission_round(ledger, [request])
    assert ledger.requests(key=key)[0].wait_reason == "pool_short"


def test_placement_refused_by_the_ledger_waits_as_gang_unplaceable(ledger_url: str) -> None:
    from nuro_ml.capacity.placement import NodeSpec

    ledger = QuotaLedger(ledger_url)
    ledger.upsert_pool("nodes", capacity=4)
    ledger.upsert_quota("perception", "nodes", nominal=4)
    ledger.set_nodes("nodes", [NodeSpec("n1", gpus=2), NodeSpec("n2", gpus=2)])
    # A two-node gang holds one GPU on each node: two GPUs are free, but not on one node.
    spread = LeaseRequest(key="spread/run/gate/-1", team="perception", pool="nodes", gpus=2, nodes=2)
    assert ledger.try_acquire(spread) is not None
    request = LeaseRequest(key="gang/run/gate/-1", team="perception", pool="nodes", gpus=2, nodes=1)
    ledger.enqueue(request)
    result = admission_round(ledger, [request])
    assert request.key in result.waiting
    assert result.reasons[request.key].reason is WaitReason.GANG_UNPLACEABLE
    assert ledger.requests(key=request.key)[0].wait_reason == "gang_unplaceable"


def test_quota_show_lists_the_reasons(ledger_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    build_reason_queue(ledger_url)
    capsys.readouterr()
    assert main(["quota", "--ledger-url", ledger_url, "show", "--json"]) == 0
    waiting = {w["key"]: w for w in json.loads(capsys.readouterr().out)["queue"]}
    assert {key: w["reason"] for key, w in waiting.items()} == EXPECTED
    assert waiting["planning_train/run_2/gate/-1"]["gpus_ahead"] == 4
    assert waiting["perception_train/run_1/gate/-1"]["reason_message"] == (
        "team 'perception' holds 4 of its limit 4 GPUs in pool 'a100'"
    )

    assert main(["quota", "--ledger-url", ledger_url, "show"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if "_train/" in line}
    assert "quota_limit" in rows["perception_train/run_1/gate/-1"]
    assert "holds 4 of its limit 4 GPUs" in rows["perception_train/run_1/gate/-1"]
    assert "behind_requests (4 GPUs ahead)" in rows["planning_train/run_2/gate/-1"]
    assert "pool_short" in rows["mapping_train/run_1/gate/-1"]


def test_page_data_queue_carries_the_reasons(ledger_url: str) -> None:
    ledger = build_reason_queue(ledger_url)
    queue = {entry.key: entry for entry in overview(ledger).queue}
    assert {key: entry.reason for key, entry in queue.items()} == EXPECTED
    assert queue["planning_train/run_2/gate/-1"].gpus_ahead == 4
    assert queue["mapping_train/run_1/gate/-1"].reason_message == (
        ledger.requests(key="mapping_train/run_1/gate/-1")[0].wait_message
    )
