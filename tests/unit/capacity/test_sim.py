"""Trace loading and the policy simulator (same decide() the trigger runs)."""

from __future__ import annotations

from pathlib import Path

import pytest
from nuro_ml.capacity.policy import PolicyConfig
from nuro_ml.capacity.records import Quota
from nuro_ml.capacity.sim.engine import simulate
from nuro_ml.capacity.sim.report import jain_index, percentile, summarize
from nuro_ml.capacity.sim.trace import (
    Job,
    Trace,
    load_alibaba,
    load_jobs_csv,
    synthetic_trace,
    write_jobs_csv,
)
from nuro_ml.exceptions import CapacityError

DATA = Path(__file__).parent / "data"


def test_alibaba_trace_keeps_gpu_pods_that_ran() -> None:
    trace = load_alibaba(DATA / "openb_pod_list_sample.csv")
    assert trace.skipped == 3  # CPU-only, never scheduled, zero length
    jobs = {j.id: j for j in trace.jobs}
    assert sorted(jobs) == [f"openb-pod-{i:04d}" for i in (0, 1, 3, 4, 5, 7, 8, 9, 10)]
    assert jobs["openb-pod-0000"].submit == 0
    assert (jobs["openb-pod-0001"].gpus, jobs["openb-pod-0001"].duration) == (1, 29600)  # shared GPU -> 1
    assert (jobs["openb-pod-0003"].gpus, jobs["openb-pod-0003"].team, jobs["openb-pod-0003"].priority) == (
        8,
        "Burstable",
        1,
    )
    assert jobs["openb-pod-0005"].duration == 2695  # deletion - scheduled, not - creation
    assert trace.teams == ["BE", "Burstable", "Guaranteed", "LS"]


def test_alibaba_loader_names_the_file_when_columns_are_missing(tmp_path: Path) -> None:
    bad = tmp_path / "pods.csv"
    bad.write_text("name,num_gpu\np,1\n")
    with pytest.raises(CapacityError, match=r"pods.csv:1: not an Alibaba GPU trace 2023 pod list"):
        load_alibaba(bad)


def test_jobs_csv_round_trip_and_errors(tmp_path: Path) -> None:
    trace = synthetic_trace(seed=3, hours=2)
    path = write_jobs_csv(trace.jobs, tmp_path / "jobs.csv")
    assert load_jobs_csv(path).jobs == trace.jobs
    iso = tmp_path / "iso.csv"
    iso.write_text(
        "submit,duration,gpus,team,priority\n2026-01-01T00:10:00+00:00,60,2,a,0\n2026-01-01T00:00:00+00:00,30,1,b,1\n"
    )
    loaded = load_jobs_csv(iso)
    assert [(j.team, j.submit) for j in loaded.jobs] == [("b", 0.0), ("a", 600.0)]
    broken = tmp_path / "broken.csv"
    broken.write_text("submit,duration,gpus,team,priority\n0,60,2,a,0\n5,sixty,1,b,0\n")
    with pytest.raises(CapacityError, match=r"broken.csv:3: column 'duration' must be a number, got 'sixty'"):
        load_jobs_csv(broken)


def test_synthetic_trace_is_reproducible() -> None:
    assert synthetic_trace(seed=5, hours=12) == synthetic_trace(seed=5, hours=12)
    assert synthetic_trace(seed=5, hours=12) != synthetic_trace(seed=6, hours=12)


def test_simulation_is_deterministic_and_never_oversubscribes() -> None:
    trace = synthetic_trace(seed=2, hours=24)
    first = simulate(trace, {"gpu": 32})
    second = simulate(trace, {"gpu": 32})
    assert [(r.job.id, r.start, r.end) for r in first.runs] == [
        (r.job.id, r.start, r.end) for r in second.runs
    ]
    assert all(r.finished for r in first.runs) and first.unschedulable == {}
    assert max(sum(used.values()) for _, used in first.timeline) <= 32
    gangs = [r for r in first.runs if r.job.nodes > 1]
    assert gangs and all(r.end - r.start == pytest.approx(r.job.duration) for r in gangs)


def test_backfill_lets_small_jobs_past_a_blocked_big_one() -> None:
    jobs = (
        Job("running", 0, 1000, 6, "a"),
        Job("big", 10, 500, 8, "b"),
        Job("small", 20, 100, 2, "c"),
    )
    trace = Trace(jobs, "handmade")
    fifo = {r.job.id: r for r in simulate(trace, {"gpu": 8}, policy="fifo").runs}
    fair = {r.job.id: r for r in simulate(trace, {"gpu": 8}, policy="fair").runs}
    assert fifo["small"].start == 1500  # behind the big job, which waits for "running"
    assert fair["small"].start == 20  # ends long before the big job can start
    assert fair["big"].start == fifo["big"].start == 1000  # and the big job is not delayed


def test_aging_keeps_a_big_low_priority_job_from_starving() -> None:
    stream = tuple(Job(f"urgent-{i:03d}", i * 300.0, 600.0, 2, "a", priority=1) for i in range(120))
    trace = Trace((*stream, Job("big", 1.0, 600.0, 4, "b")), "starvation")
    quotas = [Quota("a", "gpu", 2), Quota("b", "gpu", 2)]
    stream_end = stream[-1].submit

    def big_start(config: PolicyConfig) -> float:
        runs = {r.job.id: r for r in simulate(trace, {"gpu": 4}, quotas=quotas, policy=config).runs}
        return runs["big"].start or 0.0

    assert big_start(PolicyConfig(aging_seconds=0)) >= stream_end
    assert big_start(PolicyConfig(aging_seconds=1800)) < stream_end / 4


def test_reclaim_preempts_borrowers_for_a_team_within_its_quota() -> None:
    jobs = (Job("borrower", 0, 10_000, 4, "a"), Job("owner", 10, 100, 2, "b"))
    quotas = [Quota("a", "gpu", 2), Quota("b", "gpu", 2)]
    trace = Trace(jobs, "reclaim")
    plain = {r.job.id: r for r in simulate(trace, {"gpu": 4}, quotas=quotas, policy="fair").runs}
    assert plain["owner"].start == 10_000
    reclaiming = simulate(trace, {"gpu": 4}, quotas=quotas, policy="fair-reclaim", reclaim_grace=60)
    runs = {r.job.id: r for r in reclaiming.runs}
    # b waited reclaim_after (600 s) + grace (60 s); a's job was preempted and re-run.
    assert runs["owner"].start == pytest.approx(10 + 600 + 60)
    assert runs["borrower"].preemptions == 1 and runs["borrower"].finished


def test_report_metrics() -> None:
    assert percentile([], 95) == 0.0
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert jain_index([1, 1, 1]) == pytest.approx(1.0)
    assert jain_index([1, 0, 0]) == pytest.approx(1 / 3)
    summary = summarize(simulate(Trace((Job("j", 0, 3600, 4, "a"),), "one"), {"gpu": 8}))
    assert summary.utilization == pytest.approx(0.5)
    assert summary.team("a").jobs == 1 and summary.wait_max == 0
