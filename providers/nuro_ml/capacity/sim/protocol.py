"""The FGD paper's evaluation protocol (``nuro-ml sim --protocol fgd``).

As in Weng et al., "Beware of Fragmentation" (USENIX ATC '23) and its simulator
(kubernetes-scheduler-simulator): pods of the trace arrive in a random order (the trace is
reshuffled and repeated when it runs out) until the arrived GPU demand reaches a target
share of the cluster's GPU capacity; each pod is placed on a node by the placement policy,
respecting GPU model, CPU and memory, or fails and is dropped; nothing departs. Measured at
each step of arrived workload: the share of GPUs left unallocated and the fragmented share
(the nodes' expected fragmentation against the trace's typical workload, the measure FGD
minimises, summed over nodes, over capacity). Several seeds give the mean and the spread.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from nuro_ml.capacity.placement import (
    FragmentationCache,
    NodeSpec,
    NodeState,
    Workload,
    get_placement_policy,
    place,
    typical_workload,
)
from nuro_ml.capacity.sim.openb import Pod, cluster_milli
from nuro_ml.exceptions import CapacityError

#: Share of the arrived pods' shapes kept as the typical workload (the simulator's
#: ``podPopularityThreshold`` in the paper's runs).
TYPICAL_THRESHOLD = 0.95


@dataclass(frozen=True)
class Point:
    """The cluster after arrived GPU demand reached ``arrived`` of capacity."""

    arrived: float
    unallocated: float
    fragmented: float
    failed_pods: int


@dataclass
class ProtocolRun:
    policy: str
    seed: int
    points: list[Point] = field(default_factory=list)
    placed: int = 0
    failed: int = 0

    @property
    def final(self) -> Point:
        return self.points[-1]


@dataclass(frozen=True)
class PolicyStats:
    """Mean and standard deviation over seeds at each measured arrived share."""

    policy: str
    arrived: tuple[float, ...]
    unallocated_mean: tuple[float, ...]
    unallocated_std: tuple[float, ...]
    fragmented_mean: tuple[float, ...]
    fragmented_std: tuple[float, ...]
    seeds: int

    @property
    def final_unallocated(self) -> float:
        return self.unallocated_mean[-1]


def run_protocol(
    nodes: Sequence[NodeSpec],
    pods: Sequence[Pod],
    policy: str,
    *,
    seed: int,
    target: float = 1.0,
    step: float = 0.05,
    workload: Workload | None = None,
    order: str = "random",
) -> ProtocolRun:
    """One seed of the protocol for ``policy``; points every ``step`` of arrived workload.

    ``order="random"`` draws the pods in a random order (the trace reshuffled whenever it
    runs out), as the published FGD runs do (``--shuffle-pod=true``, then workload tuning
    adds random pods of the trace); ``"submission"`` replays them in creation order first
    and then draws at random, the simulator's default without shuffling
    (``shufflePod: false``).
    """
    if order not in ("random", "submission"):
        raise CapacityError(f"arrival order must be 'random' or 'submission', got {order!r}")
    if not 0 < target <= 1.5:
        raise CapacityError(f"target share of capacity must be in (0, 1.5], got {target}")
    if not 0 < step <= target:
        raise CapacityError(f"step must be in (0, target], got {step}")
    capacity = cluster_milli(nodes)
    if capacity <= 0:
        raise CapacityError("the node list has no GPUs")
    gpu_pods = [p for p in pods if p.demand.total_milli > 0]
    if not gpu_pods:
        raise CapacityError("the pod list has no GPU pods")
    workload = workload if workload is not None else typical_workload(p.demand for p in pods)
    chooser = get_placement_policy(policy, workload)
    frag = FragmentationCache(workload)
    states = [NodeState.empty(spec) for spec in nodes]
    rng = random.Random(seed)
    queue: list[Pod] = []
    if order == "submission":
        queue = sorted(pods, key=lambda p: (p.created, p.name), reverse=True)
    run = ProtocolRun(policy=policy, seed=seed)
    arrived = 0
    allocated = 0
    checkpoints = [round(step * k, 6) for k in range(1, math.floor(target / step + 1e-9) + 1)]
    if not checkpoints or checkpoints[-1] < target - 1e-9:
        checkpoints.append(target)
    next_point = 0
    while next_point < len(checkpoints):
        if not queue:
            queue = list(pods)
            rng.shuffle(queue)
        pod = queue.pop()
        demand = pod.demand
        if arrived + demand.total_milli > checkpoints[-1] * capacity + 1e-9 and demand.total_milli:
            # The last pod would overshoot the target: stop at the target as the paper does.
            while next_point < len(checkpoints):
                run.points.append(_point(checkpoints[next_point], states, capacity, allocated, frag, run))
                next_point += 1
            break
        arrived += demand.total_milli
        placement = place(states, demand, chooser, commit=True)
        if placement is None:
            run.failed += 1
        else:
            run.placed += 1
            allocated += placement.total_milli
        while next_point < len(checkpoints) and arrived >= checkpoints[next_point] * capacity - 1e-9:
            run.points.append(_point(checkpoints[next_point], states, capacity, allocated, frag, run))
            next_point += 1
    return run


def _point(
    arrived: float,
    states: Sequence[NodeState],
    capacity: int,
    allocated: int,
    frag: FragmentationCache,
    run: ProtocolRun,
) -> Point:
    fragmented = sum(frag(node) for node in states)
    return Point(arrived, 1 - allocated / capacity, fragmented / capacity, run.failed)


def run_seeds(
    nodes: Sequence[NodeSpec],
    pods: Sequence[Pod],
    policies: Sequence[str],
    *,
    seeds: Sequence[int] = tuple(range(10)),
    target: float = 1.0,
    step: float = 0.05,
    order: str = "random",
) -> tuple[list[PolicyStats], list[ProtocolRun]]:
    """Every policy on the same seeds (the same arrival orders); stats per policy."""
    if not seeds:
        raise CapacityError("give at least one seed")
    workload = typical_workload((p.demand for p in pods), threshold=TYPICAL_THRESHOLD)
    runs = [
        run_protocol(nodes, pods, policy, seed=seed, target=target, step=step, workload=workload, order=order)
        for policy in policies
        for seed in seeds
    ]
    stats = []
    for policy in policies:
        mine = [r for r in runs if r.policy == policy]
        count = min(len(r.points) for r in mine)
        arrived = tuple(mine[0].points[i].arrived for i in range(count))
        un = [[r.points[i].unallocated for r in mine] for i in range(count)]
        fr = [[r.points[i].fragmented for r in mine] for i in range(count)]
        stats.append(
            PolicyStats(
                policy=policy,
                arrived=arrived,
                unallocated_mean=tuple(_mean(v) for v in un),
                unallocated_std=tuple(_std(v) for v in un),
                fragmented_mean=tuple(_mean(v) for v in fr),
                fragmented_std=tuple(_std(v) for v in fr),
                seeds=len(mine),
            )
        )
    return stats, runs


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _std(values: Sequence[float]) -> float:
    if len(values) < 2:
        return 0.0
    mean = _mean(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def format_protocol(stats: Sequence[PolicyStats]) -> str:
    """Unallocated and fragmented GPU share at the target, mean +- std over seeds."""
    lines = [f"{'policy':<10}  {'unallocated GPUs':>20}  {'fragmented GPUs':>20}  seeds"]
    for s in stats:
        lines.append(
            f"{s.policy:<10}  {s.unallocated_mean[-1]:>11.2%} ± {s.unallocated_std[-1]:<6.2%}"
            f"  {s.fragmented_mean[-1]:>11.2%} ± {s.fragmented_std[-1]:<6.2%}  {s.seeds}"
        )
    return "\n".join(lines)


def plot_protocol(stats: Sequence[PolicyStats], out_dir: str, *, title: str = "") -> list[str]:
    """Unallocated and fragmented GPU share against arrived workload, one line per policy."""
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for attr, label, name in (
        ("unallocated", "unallocated GPUs (% of capacity)", "fgd_unallocated.png"),
        ("fragmented", "fragmented GPUs (% of capacity)", "fgd_fragmented.png"),
    ):
        fig, ax = plt.subplots(figsize=(7, 4))
        for s in stats:
            xs = [100 * a for a in s.arrived]
            mean = [100 * v for v in getattr(s, f"{attr}_mean")]
            std = [100 * v for v in getattr(s, f"{attr}_std")]
            ax.plot(xs, mean, label=s.policy)
            ax.fill_between(
                xs,
                [m - d for m, d in zip(mean, std, strict=True)],
                [m + d for m, d in zip(mean, std, strict=True)],
                alpha=0.2,
            )
        ax.set_xlabel("arrived workload (% of GPU capacity)")
        ax.set_ylabel(label)
        ax.set_title(title or "FGD protocol")
        ax.legend()
        fig.tight_layout()
        path = out / name
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(str(path))
    return written
