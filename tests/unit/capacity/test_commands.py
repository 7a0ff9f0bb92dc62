"""``nuro-ml quota`` and ``nuro-ml sim`` through the real argument parser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from nuro_ml.capacity.ledger import QuotaLedger
from nuro_ml.capacity.records import LeaseRequest, LeaseState
from nuro_ml.cli import main

DATA = Path(__file__).parent / "data"


def test_quota_set_show_release(ledger_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["quota", "--ledger-url", ledger_url, "set-pool", "a100", "--gpus", "8", "--gpu-type", "A100"])
        == 0
    )
    assert (
        main(
            [
                "quota",
                "--ledger-url",
                ledger_url,
                "set-quota",
                "perception",
                "--pool",
                "a100",
                "--nominal",
                "6",
                "--lending-limit",
                "2",
            ]
        )
        == 0
    )
    ledger = QuotaLedger(ledger_url)
    lease = ledger.try_acquire(LeaseRequest(key="train/r/wait/-1", team="perception", pool="a100", gpus=3))
    ledger.enqueue(LeaseRequest(key="train/r2/wait/-1", team="perception", pool="a100", gpus=8))
    capsys.readouterr()

    assert main(["quota", "--ledger-url", ledger_url, "show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    [pool] = shown["pools"]
    assert (pool["name"], pool["capacity"], pool["gpu_type"], pool["used"], pool["free"]) == (
        "a100",
        8,
        "A100",
        3,
        5,
    )
    assert shown["quotas"][0] == {
        "team": "perception",
        "pool": "a100",
        "nominal": 6,
        "borrowing_limit": None,
        "lending_limit": 2,
        "limit": 8,
        "used": 3,
        "borrowed": 0,
    }
    assert [entry["lease_id"] for entry in shown["leases"]] == [lease.lease_id]
    assert [entry["key"] for entry in shown["queue"]] == ["train/r2/wait/-1"]

    assert main(["quota", "--ledger-url", ledger_url, "show"]) == 0
    table = capsys.readouterr().out
    assert "Team quotas" in table and lease.lease_id in table and "train/r2/wait/-1" in table

    assert main(["quota", "--ledger-url", ledger_url, "release", lease.lease_id]) == 0
    assert ledger.lease(lease.lease_id).state is LeaseState.RELEASED
    assert main(["quota", "--ledger-url", ledger_url, "release", "lease-nope"]) == 1
    assert main(["quota", "--ledger-url", ledger_url, "usage", "--price", "a100=p4d.24xlarge"]) == 0
    assert "GPU usage in the last 24 h" in capsys.readouterr().out
    assert main(["quota", "--ledger-url", ledger_url, "remove-quota", "perception", "--pool", "a100"]) == 0
    assert ledger.quotas() == []


def test_sim_compares_policies_on_an_alibaba_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sim"
    trace = DATA / "openb_pod_list_sample.csv"
    assert main(["sim", str(trace), "--gpus", "8", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "alibaba:openb_pod_list_sample.csv: 9 jobs (3 skipped)" in printed
    assert "fifo" in printed and "fair" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert [s["policy"] for s in summary] == ["fifo", "fair"]
    assert all(s["finished"] == 9 for s in summary)
    for name in ("utilization.png", "wait_cdf.png", "team_p95_wait.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sim_synthetic_with_quotas_and_bad_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                "sim",
                "--synthetic",
                "--hours",
                "6",
                "--seed",
                "4",
                "--quota",
                "perception=16",
                "--quota",
                "planning=8",
                "--quota",
                "mapping=8",
                "--no-plots",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    assert "synthetic(seed=4, hours=6)" in capsys.readouterr().out
    assert main(["sim", str(DATA / "openb_pod_list_sample.csv"), "--out", str(tmp_path)]) == 2
    assert "give the cluster with --nodes NODE_LIST" in capsys.readouterr().err
    assert main(["sim", "--synthetic", "--hours", "1", "--quota", "x=lots", "--out", str(tmp_path)]) == 2
    assert "--quota 'x=lots': expected GPUs (4, 2.5) or milli-GPUs (2500m)" in capsys.readouterr().err
    assert main(["sim", "--synthetic", "--hours", "1", "--quota", "x", "--out", str(tmp_path)]) == 2
    assert "--quota 'x': expected TEAM=GPUS[@POOL]" in capsys.readouterr().err


def test_quota_set_nodes_reads_a_node_list(ledger_url: str, tmp_path: Path, capsys) -> None:
    nodes = tmp_path / "nodes.csv"
    nodes.write_text("sn,cpu_milli,memory_mib,gpu,model\ng-0,96000,393216,8,G2\nt-0,104000,524288,2,T4\n")
    assert main(["quota", "--ledger-url", ledger_url, "set-pool", "mixed", "--gpus", "0"]) == 0
    assert main(["quota", "--ledger-url", ledger_url, "set-nodes", "mixed", str(nodes)]) == 0
    assert "pool mixed: 2 nodes, 10 GPUs (G2, T4)" in capsys.readouterr().out
    from nuro_ml.capacity.ledger import QuotaLedger

    assert [(n.name, n.gpus, n.gpu_model) for n in QuotaLedger(ledger_url).nodes("mixed")] == [
        ("g-0", 8, "G2"),
        ("t-0", 2, "T4"),
    ]
