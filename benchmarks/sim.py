"""Admission policy on a synthetic multi-team trace: ours (``fair``) against FIFO.

The trace (:func:`nuro_ml.capacity.sim.trace.synthetic_trace`, a week by default) has three
teams sharing 32 GPUs at about two-thirds load: big multi-node training jobs, many small
experiments, medium jobs with a few urgent ones. Both policies replay the same trace
through :func:`nuro_ml.capacity.policy.decide`, the code the GPU-capacity trigger runs.
The reference is FIFO with head-of-line blocking (no backfill, no priorities, no fairness).

Targets: mean wait at least 30% below FIFO at equal or higher utilization, and no team's
p95 wait more than 10% above its FIFO p95. The seed sweep repeats the comparison on other
seeds of the same generator and counts the seeds meeting all three targets.

The FGD protocol line places pods on nodes: a cluster and a pod list generated in the
openb CSV format and shaped like the Alibaba GPU trace 2023 (its node mix of GPU models and
sizes, 44% of GPU pods sharing a GPU, ~1% multi-GPU pods, 13% CPU-only pods; written to
and read back from openb_node_list / openb_pod_list CSV files), pods arriving in random
order until 100% of GPU capacity has arrived, 10 seeds. Ours is the ``ours`` placement
policy; the reference is best-fit as the FGD paper's simulator defines it. Ratio =
reference unallocated / ours unallocated (target >= 1.43, i.e. 30% fewer unallocated GPUs).

Prints::

    sim_fgd_protocol: ours X% unallocated, reference Y% unallocated, ratio Z
    sim_policy: utilization ours X, fifo Y; mean wait ours A s, fifo B s
    sim_policy_mean_wait: ours A s, reference B s, ratio Z
    sim_policy_worst_team_p95: ours A s (team), reference B s, ratio Z
    sim_policy_seeds: targets met on K of N seeds (mean wait ratio min..max)

Run: ``python -m benchmarks.sim [--seed S] [--hours H] [--sweep N] [--nodes N] [--fgd-seeds K]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from nuro_ml.capacity.sim.engine import simulate
from nuro_ml.capacity.sim.openb import (
    generate_openb_like,
    load_node_list,
    load_pods,
    write_node_list,
    write_pod_list,
)
from nuro_ml.capacity.sim.protocol import run_seeds
from nuro_ml.capacity.sim.report import Summary, summarize
from nuro_ml.capacity.sim.trace import synthetic_trace

CAPACITY = {"gpu": 32}


def compare(seed: int, hours: float) -> tuple[Summary, Summary]:
    trace = synthetic_trace(seed=seed, hours=hours)
    ours = summarize(simulate(trace, CAPACITY, policy="fair"))
    fifo = summarize(simulate(trace, CAPACITY, policy="fifo"))
    return ours, fifo


def worst_team(ours: Summary, fifo: Summary) -> tuple[str, float, float]:
    """The team whose p95 wait got relatively worst under ours."""
    team = max(fifo.teams, key=lambda t: ours.team(t.team).wait_p95 / max(t.wait_p95, 1.0))
    return team.team, ours.team(team.team).wait_p95, team.wait_p95


def meets_targets(ours: Summary, fifo: Summary) -> bool:
    _team, ours_p95, fifo_p95 = worst_team(ours, fifo)
    return (
        ours.wait_mean <= 0.7 * fifo.wait_mean
        and ours.utilization >= fifo.utilization - 1e-9
        and ours_p95 <= 1.1 * fifo_p95
    )


def fgd_protocol(nodes: int, seeds: int) -> None:
    specs, pods = generate_openb_like(nodes=nodes, seed=2023)
    with tempfile.TemporaryDirectory() as folder:
        node_path = write_node_list(specs, Path(folder) / "openb_node_list_gpu_node.csv")
        pod_path = write_pod_list(pods, Path(folder) / "openb_pod_list_default.csv")
        specs, pods = load_node_list(node_path), load_pods(pod_path)
    started = time.perf_counter()
    stats, _runs = run_seeds(specs, pods, ["best-fit", "ours"], seeds=range(seeds), target=1.0)
    elapsed = time.perf_counter() - started
    reference, ours = stats
    gpu_pods = [p for p in pods if p.demand.total_milli]
    sharing = sum(p.demand.sharing for p in gpu_pods) / len(gpu_pods)
    print(
        f"# input: openb-format generated cluster of {len(specs)} nodes "
        f"({sum(n.gpus for n in specs)} GPUs), {len(pods)} pods ({sharing:.0%} of GPU pods sharing), "
        f"random arrivals to 100% of GPU capacity, {seeds} seeds; {elapsed:.0f} s"
    )
    print(
        f"# ours {ours.final_unallocated:.2%} ± {ours.unallocated_std[-1]:.2%}, "
        f"best-fit {reference.final_unallocated:.2%} ± {reference.unallocated_std[-1]:.2%} (mean ± std)"
    )
    print(
        f"sim_fgd_protocol: ours {100 * ours.final_unallocated:.2f}% unallocated, "
        f"reference {100 * reference.final_unallocated:.2f}% unallocated, "
        f"ratio {reference.final_unallocated / max(ours.final_unallocated, 1e-9):.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--hours", type=float, default=168.0)
    parser.add_argument("--sweep", type=int, default=8, help="seeds 1..N for the robustness line")
    parser.add_argument("--nodes", type=int, default=400, help="nodes of the generated openb-like cluster")
    parser.add_argument("--fgd-seeds", type=int, default=10, help="seeds of the FGD protocol line")
    args = parser.parse_args(argv)

    fgd_protocol(args.nodes, args.fgd_seeds)

    ours, fifo = compare(args.seed, args.hours)
    team, ours_p95, fifo_p95 = worst_team(ours, fifo)
    print(
        f"sim_policy: utilization ours {ours.utilization:.3f}, fifo {fifo.utilization:.3f}; "
        f"mean wait ours {ours.wait_mean:.0f} s, fifo {fifo.wait_mean:.0f} s"
    )
    print(
        f"sim_policy_mean_wait: ours {ours.wait_mean:.0f} s, reference {fifo.wait_mean:.0f} s, "
        f"ratio {fifo.wait_mean / max(ours.wait_mean, 1e-9):.2f}"
    )
    print(
        f"sim_policy_worst_team_p95: ours {ours_p95:.0f} s ({team}), reference {fifo_p95:.0f} s, "
        f"ratio {fifo_p95 / max(ours_p95, 1e-9):.2f}"
    )
    if args.sweep > 0:
        met = 0
        ratios = []
        for seed in range(1, args.sweep + 1):
            seed_ours, seed_fifo = (ours, fifo) if seed == args.seed else compare(seed, args.hours)
            met += meets_targets(seed_ours, seed_fifo)
            ratios.append(seed_ours.wait_mean / max(seed_fifo.wait_mean, 1e-9))
        print(
            f"sim_policy_seeds: targets met on {met} of {args.sweep} seeds "
            f"(mean wait ours/fifo {min(ratios):.2f}..{max(ratios):.2f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
