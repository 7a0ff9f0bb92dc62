"""Metrics, tables and plots of simulation results.

* utilization: GPU-seconds of finished work over capacity x makespan (first submission to
  last completion);
* wait: seconds a job spent queued (over all attempts), p50/p95/max per team and overall;
* JCT: job completion time, submission to end;
* fairness: Jain's index over the teams' mean slowdown (JCT / run time): 1.0 when every
  team is slowed down alike, 1/n when one team bears all the delay.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from nuro_ml.capacity.sim.engine import SimResult
from nuro_ml.capacity.stats import percentile


def jain_index(values: Sequence[float]) -> float:
    if not values or all(v == 0 for v in values):
        return 1.0
    return sum(values) ** 2 / (len(values) * sum(v * v for v in values))


@dataclass(frozen=True)
class TeamStats:
    team: str
    jobs: int
    wait_mean: float
    wait_p50: float
    wait_p95: float
    wait_max: float
    jct_mean: float
    slowdown_mean: float


@dataclass(frozen=True)
class Summary:
    policy: str
    trace: str
    jobs: int
    finished: int
    unschedulable: int
    utilization: float
    makespan: float
    wait_mean: float
    wait_p50: float
    wait_p95: float
    wait_max: float
    jct_mean: float
    fairness: float
    preemptions: int
    teams: tuple[TeamStats, ...]

    def team(self, name: str) -> TeamStats:
        return next(t for t in self.teams if t.team == name)


def summarize(result: SimResult) -> Summary:
    done = [r for r in result.runs if r.finished]
    waits = [r.wait for r in done]
    start = min((r.job.submit for r in result.runs), default=0.0)
    end = max((r.end or 0.0 for r in done), default=start)
    makespan = max(0.0, end - start)
    work = sum(r.job.gpus * r.job.duration for r in done)
    capacity = sum(result.capacity.values())
    teams = []
    for team in sorted({r.job.team for r in result.runs}):
        mine = [r for r in done if r.job.team == team]
        team_waits = [r.wait for r in mine]
        teams.append(
            TeamStats(
                team=team,
                jobs=len(mine),
                wait_mean=sum(team_waits) / len(mine) if mine else 0.0,
                wait_p50=percentile(team_waits, 50),
                wait_p95=percentile(team_waits, 95),
                wait_max=max(team_waits, default=0.0),
                jct_mean=sum(r.jct for r in mine) / len(mine) if mine else 0.0,
                slowdown_mean=sum(r.jct / r.job.duration for r in mine) / len(mine) if mine else 0.0,
            )
        )
    return Summary(
        policy=result.policy,
        trace=result.trace,
        jobs=len(result.runs),
        finished=len(done),
        unschedulable=len(result.unschedulable),
        utilization=work / (capacity * makespan) if capacity and makespan else 0.0,
        makespan=makespan,
        wait_mean=sum(waits) / len(waits) if waits else 0.0,
        wait_p50=percentile(waits, 50),
        wait_p95=percentile(waits, 95),
        wait_max=max(waits, default=0.0),
        jct_mean=sum(r.jct for r in done) / len(done) if done else 0.0,
        fairness=jain_index([t.slowdown_mean for t in teams if t.jobs]),
        preemptions=sum(r.preemptions for r in result.runs),
        teams=tuple(teams),
    )


def format_table(summaries: Sequence[Summary]) -> str:
    """Side-by-side comparison of policies, then per-team waits."""
    names = [s.policy for s in summaries]
    rows: list[tuple[str, ...]] = [("metric", *names)]

    def add(label: str, values: Sequence[str]) -> None:
        rows.append((label, *values))

    add("jobs finished", [f"{s.finished}/{s.jobs}" for s in summaries])
    add("utilization", [f"{s.utilization:.1%}" for s in summaries])
    add("makespan (h)", [f"{s.makespan / 3600:.2f}" for s in summaries])
    add("wait mean (s)", [f"{s.wait_mean:.0f}" for s in summaries])
    add("wait p50 (s)", [f"{s.wait_p50:.0f}" for s in summaries])
    add("wait p95 (s)", [f"{s.wait_p95:.0f}" for s in summaries])
    add("wait max (s)", [f"{s.wait_max:.0f}" for s in summaries])
    add("JCT mean (s)", [f"{s.jct_mean:.0f}" for s in summaries])
    add("fairness (Jain)", [f"{s.fairness:.3f}" for s in summaries])
    add("preemptions", [str(s.preemptions) for s in summaries])
    for team in [t.team for t in summaries[0].teams]:
        add(
            f"{team} wait p50/p95/max (s)",
            [
                f"{s.team(team).wait_p50:.0f}/{s.team(team).wait_p95:.0f}/{s.team(team).wait_max:.0f}"
                for s in summaries
            ],
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        lines.append(
            "  ".join(
                cell.ljust(width) if i == 0 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            )
        )
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_json(summaries: Sequence[Summary], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([asdict(s) for s in summaries], indent=2, sort_keys=True))
    return path


def plot(results: Sequence[SimResult], summaries: Sequence[Summary], out_dir: str | Path) -> list[Path]:
    """PNG plots: GPUs in use over time, wait-time CDF, per-team p95 wait. Returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []

    fig, ax = plt.subplots(figsize=(9, 4))
    for result in results:
        times = [t / 3600 for t, _ in result.timeline]
        used = [sum(u.values()) for _, u in result.timeline]
        ax.step(times, used, where="post", label=result.policy, linewidth=1)
    ax.axhline(
        sum(results[0].capacity.values()), color="grey", linestyle="--", linewidth=0.8, label="capacity"
    )
    ax.set_xlabel("hours")
    ax.set_ylabel("GPUs in use")
    ax.set_title("GPU utilization over time")
    ax.legend()
    fig.tight_layout()
    written.append(out / "utilization.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for result in results:
        waits = sorted(r.wait / 60 for r in result.runs if r.finished)
        if waits:
            ax.plot(waits, [(i + 1) / len(waits) for i in range(len(waits))], label=result.policy)
    ax.set_xlabel("wait (minutes)")
    ax.set_ylabel("share of jobs")
    ax.set_title("Queue wait CDF")
    ax.legend()
    fig.tight_layout()
    written.append(out / "wait_cdf.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    teams = [t.team for t in summaries[0].teams]
    width = 0.8 / max(1, len(summaries))
    for index, summary in enumerate(summaries):
        xs = [i + index * width for i in range(len(teams))]
        ax.bar(xs, [summary.team(t).wait_p95 / 60 for t in teams], width=width, label=summary.policy)
    ax.set_xticks([i + width * (len(summaries) - 1) / 2 for i in range(len(teams))])
    ax.set_xticklabels(teams)
    ax.set_ylabel("p95 wait (minutes)")
    ax.set_title("p95 wait per team")
    ax.legend()
    fig.tight_layout()
    written.append(out / "team_p95_wait.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)
    return written
