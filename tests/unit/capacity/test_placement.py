"""Placement policies and the FGD fragmentation measure.

The fragmentation figures below are the FGD authors' own (kubernetes-scheduler-simulator,
Apache-2.0, ``pkg/utils/frag_test.go``: ``TestNodeGpuShareFragAmountScore``): the same
typical-pod list and nodes, the same expected fragmentation in milli-GPUs.
"""

from __future__ import annotations

import pytest
from nuro_ml.capacity.placement import (
    MILLI,
    BestFit,
    Demand,
    FirstFit,
    FragmentationGradient,
    NodeSpec,
    NodeState,
    Ours,
    TypicalTask,
    best_fit_points,
    fgd_score,
    get_placement_policy,
    node_fragmentation,
    place,
    task_fragmentation,
    typical_workload,
)
from nuro_ml.exceptions import CapacityError

# (cpu milli, gpu milli, gpu count, gpu type, popularity %) from the simulator's test.
SIMULATOR_TYPICAL_PODS = [
    (6000, 465, 1, "", 9.33),
    (8000, 440, 1, "2080", 9.15),
    (8000, 475, 1, "T4", 8.76),
    (8000, 440, 1, "P100", 8.72),
    (2000, 465, 1, "", 8.68),
    (12000, 900, 1, "", 8.65),
    (4000, 900, 1, "", 8.43),
    (16000, 678, 1, "T4", 8.36),
    (8000, 500, 1, "", 8.29),
    (6000, 511, 1, "", 8.11),
    (14000, 1000, 2, "2080", 0.54),
    (4000, 1000, 1, "2080", 0.43),
    (32000, 1000, 2, "T4", 0.43),
    (16000, 1000, 1, "V100M16", 0.40),
    (64000, 1000, 2, "", 0.40),
    (10000, 1000, 2, "", 0.40),
    (11400, 1000, 1, "T4", 0.36),
    (16000, 1000, 1, "T4", 0.36),
    (4000, 1000, 2, "", 0.36),
    (14000, 1000, 2, "V100M16", 0.36),
    (8000, 1000, 4, "", 0.36),
    (16000, 1000, 2, "", 0.32),
    (2000, 1000, 1, "T4", 0.32),
    (6000, 1000, 1, "", 0.32),
    (4000, 1000, 1, "", 0.32),
    (5000, 1000, 1, "", 0.32),
    (32000, 1000, 4, "V100M16", 0.32),
    (32000, 1000, 2, "", 0.32),
    (24000, 1000, 8, "2080", 0.32),
    (40000, 1000, 4, "", 0.29),
    (32000, 1000, 8, "", 0.29),
    (32000, 1000, 1, "T4", 0.29),
    (16000, 1000, 1, "", 0.25),
    (7000, 1000, 1, "V100M16", 0.25),
    (24000, 1000, 1, "T4", 0.25),
]


def simulator_workload() -> tuple[TypicalTask, ...]:
    return tuple(
        TypicalTask(Demand(gpu_milli, gpus, 1, cpu, 0, model or None), pct / 100)
        for cpu, gpu_milli, gpus, model, pct in SIMULATOR_TYPICAL_PODS
    )


def node(
    free: list[int], *, cpu_free: int, cpu: int = 64000, model: str = "1080", name: str = "n"
) -> NodeState:
    return NodeState(NodeSpec(name, len(free), model, cpu, 262144), list(free), cpu_free, 262144)


@pytest.mark.parametrize(
    ("free", "expected"),
    [
        ([200, 1000, 1000, 500], 2566.62),
        ([1000, 1000, 1000, 1000], 3802.40),
        ([1000] * 8, 7604.80),
    ],
)
def test_node_fragmentation_matches_the_fgd_simulator(free: list[int], expected: float) -> None:
    assert node_fragmentation(node(free, cpu_free=1000), simulator_workload()) == pytest.approx(
        expected, abs=0.01
    )


def test_node_lacking_cpu_counts_all_free_gpu_as_fragment() -> None:
    one = (TypicalTask(Demand(465, 1, 1, 6000, 0, None), 0.0933),)
    lacking = node([200, 1000, 1000, 500], cpu_free=1000)
    assert task_fragmentation(lacking, one[0].demand) == 2700
    assert node_fragmentation(lacking, one) == pytest.approx(251.91, abs=0.01)


def test_fragment_is_the_share_too_small_for_the_task() -> None:
    free = node([200, 1000, 1000, 500], cpu_free=64000)
    assert task_fragmentation(free, Demand(300, 1, 1, 0, 0, None)) == 200  # only GPU 0 is too small
    assert task_fragmentation(free, Demand(MILLI, 1, 1, 0, 0, None)) == 700  # partial GPUs are fragments
    assert task_fragmentation(free, Demand(MILLI, 4, 1, 0, 0, None)) == 2700  # cannot run: all of it
    assert task_fragmentation(free, Demand(MILLI, 1, 1, 0, 0, "V100M32")) == 2700  # wrong model
    assert task_fragmentation(free, Demand(0, 0, 1, 1000, 0, None)) == 2700  # CPU-only task


def test_gradient_choice_prefers_the_gpu_that_adds_least_fragmentation() -> None:
    # Workload: half 0.5-GPU tasks, half whole-GPU tasks. A 0.5-GPU task arrives.
    workload = (
        TypicalTask(Demand(500, 1, 1, 0, 0, None), 0.5),
        TypicalTask(Demand(MILLI, 1, 1, 0, 0, None), 0.5),
    )
    nodes = [node([1000, 1000], cpu_free=64000, name="a"), node([500, 1000], cpu_free=64000, name="b")]
    task = Demand(500, 1, 1, 0, 0, None)
    # Before: F(a) = 0; F(b) = 0.5 * 0 + 0.5 * 500 = 250.
    assert node_fragmentation(nodes[0], workload) == 0
    assert node_fragmentation(nodes[1], workload) == 250
    # On a, either GPU: [500, 1000] -> F = 250, delta +250. On b GPU 0: [0, 1000] -> F = 0,
    # delta -250; on b GPU 1: [500, 500] -> F = 500, delta +250. FGD fills b's half-used GPU.
    fgd = FragmentationGradient(workload)
    deltas = {(i, g): d for i in (0, 1) for d, g in fgd.options(nodes[i], task)}
    assert deltas == {(0, (0,)): 250, (0, (1,)): 250, (1, (0,)): -250, (1, (1,)): 250}
    placement = place(nodes, task, fgd)
    assert placement is not None
    assert [(s.node, s.gpu, s.milli) for s in placement.shares] == [("b", 0, 500)]
    # First-fit takes the first node; best-fit the fullest node, on its fullest fitting GPU.
    first = place(nodes, task, FirstFit())
    assert first is not None and first.shares[0].node == "a"
    best = place(nodes, task, BestFit())
    assert best is not None and (best.shares[0].node, best.shares[0].gpu) == ("b", 0)


def test_best_fit_score_follows_the_simulator() -> None:
    # Score = 0.5 (cpu_free - cpu_req) / 128000 + 0.5 (gpu_free - gpu_req) / 8000: the node
    # with less CPU left wins even with more GPU left, when the CPU term dominates.
    nodes = [
        node([1000] * 2, cpu_free=96000, cpu=96000, name="gpu-tight"),
        node([1000] * 4, cpu_free=8000, cpu=96000, name="cpu-tight"),
    ]
    chosen = place(nodes, Demand(MILLI, 1, 1, 4000, 0, None), BestFit())
    # gpu-tight: 0.5*92000/128000 + 0.5*1000/8000 = 0.422; cpu-tight: 0.5*4000/128000 + 0.5*3000/8000 = 0.203
    assert chosen is not None and chosen.nodes == ("cpu-tight",)


def test_gang_is_placed_on_distinct_nodes_whole_or_not_at_all() -> None:
    nodes = [node([1000, 1000], cpu_free=64000, name=f"n{i}") for i in range(3)]
    nodes[2].gpu_free = [1000, 0]
    gang = Demand(MILLI, 2, 3, 0, 0, None)
    assert place(nodes, gang, FirstFit(), commit=True) is None
    assert [n.gpu_free for n in nodes] == [[1000, 1000], [1000, 1000], [1000, 0]]  # nothing kept
    two = Demand(MILLI, 2, 2, 0, 0, None)
    placement = place(nodes, two, FirstFit(), commit=True)
    assert placement is not None and placement.nodes == ("n0", "n1")
    assert [n.gpu_free for n in nodes] == [[0, 0], [0, 0], [1000, 0]]


def test_eight_gpus_on_one_node_refused_when_free_gpus_are_scattered() -> None:
    nodes = [node([1000, 1000, 0, 0], cpu_free=64000, name=f"n{i}") for i in range(4)]
    assert sum(n.free_milli for n in nodes) == 8 * MILLI
    for policy in ("first-fit", "best-fit"):
        assert place(nodes, Demand(MILLI, 8, 1, 0, 0, None), get_placement_policy(policy)) is None
    assert place(nodes, Demand(MILLI, 2, 4, 0, 0, None), FirstFit()) is not None


def test_demand_from_milli_reads_whole_gpus_and_shares() -> None:
    assert Demand.from_milli(8000, workers=2) == Demand(MILLI, 4, 2)
    assert Demand.from_milli(250).sharing
    with pytest.raises(CapacityError, match="split evenly"):
        Demand.from_milli(1000, workers=3)
    with pytest.raises(CapacityError, match="whole GPUs"):
        Demand.from_milli(1500)


def test_typical_workload_keeps_the_popular_shapes() -> None:
    demands = [Demand(500, 1, 1, 4000)] * 6 + [Demand(MILLI, 1, 1, 8000)] * 3 + [Demand(MILLI, 8, 1, 64000)]
    workload = typical_workload(demands, threshold=0.9)
    assert [(t.demand.gpu_milli, t.demand.gpus_per_worker) for t in workload] == [(500, 1), (1000, 1)]
    assert [t.popularity for t in workload] == pytest.approx([6 / 9, 3 / 9])


def test_fgd_settles_equal_scores_by_smallest_node_name_as_the_simulator_does() -> None:
    # The simulator's kube-scheduler keeps the smallest node name among equal best scores
    # (its patched selectHost), it does not draw one at random.
    assert fgd_score(-250) == 56 and fgd_score(0) == 50 and fgd_score(250) == 43
    workload = (TypicalTask(Demand(MILLI, 1, 1, 0, 0, None), 1.0),)
    task = Demand(MILLI, 1, 1, 0, 0, None)

    def cluster() -> list[NodeState]:
        # Listed out of name order. "a" is interchangeable with "z" (same free shares in
        # another GPU order), so "z", listed first, stands for both when grouped.
        return [
            node([1000, 1000, 1000, 500], cpu_free=64000, name="z"),
            node([1000, 1000, 0, 0], cpu_free=64000, name="b"),
            node([500, 1000, 1000, 1000], cpu_free=64000, name="a"),
        ]

    # A whole-GPU workload: no whole-GPU placement changes fragmentation, every node ties.
    fgd = FragmentationGradient(workload)
    assert {fgd.best_on(n, task)[0] for n in cluster()} == {fgd_score(0)}
    for _ in range(3):
        placement = place(cluster(), task, FragmentationGradient(workload))
        # "a" itself, on its own first whole GPU (GPU 0 of "a" is the half-used one).
        assert placement is not None and [(s.node, s.gpu) for s in placement.shares] == [("a", 1)]
    assert place(cluster(), task, get_placement_policy("fgd", workload)) == placement
    # Ours settles the same tie by node order, whatever the names: "z", listed first.
    placement = place(cluster(), task, Ours(workload))
    assert placement is not None and [(s.node, s.gpu) for s in placement.shares] == [("z", 0)]


def test_ours_fills_the_earliest_node_among_equal_fits() -> None:
    workload = (TypicalTask(Demand(MILLI, 1, 1, 0, 0, None), 1.0),)
    nodes = [node([1000] * 4, cpu_free=64000, name=name) for name in ("c", "a", "b")]
    placement = place(nodes, Demand(MILLI, 1, 1, 0, 0, None), Ours(workload), commit=True)
    assert placement is not None and placement.nodes == ("c",)
    placement = place(nodes, Demand(MILLI, 1, 1, 0, 0, None), Ours(workload), commit=True)
    assert placement is not None and placement.nodes == ("c",)  # still the earliest
    # Every node still scores alike for FGD, which goes by name.
    placement = place(nodes, Demand(MILLI, 1, 1, 0, 0, None), FragmentationGradient(workload))
    assert placement is not None and placement.nodes == ("a",)


def test_best_fit_scores_on_the_schedulers_integer_scale_and_settles_by_name() -> None:
    # Float scores: b 0.5*64000/128000 + 0.5*1000/8000 = 0.3125, a 0.3164 (a is worse), but
    # both are worth int((1 - s) * 100) = 68 points to the simulator: the smallest name wins.
    nodes = [
        node([1000, 1000], cpu_free=64000, cpu=96000, name="b"),
        node([1000, 1000], cpu_free=65000, cpu=96000, name="a"),
    ]
    task = Demand(MILLI, 1, 1, 0, 0, None)
    assert [best_fit_points(n, task) for n in nodes] == [68, 68]
    chosen = place(nodes, task, BestFit())
    assert chosen is not None and chosen.nodes == ("a",)
    nodes[1].cpu_free = 72000  # 0.3437: 65 points, b wins outright
    chosen = place(nodes, task, BestFit())
    assert chosen is not None and chosen.nodes == ("b",)
