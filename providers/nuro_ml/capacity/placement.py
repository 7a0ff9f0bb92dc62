"""Node-level placement of GPU requests: nodes, GPU shares, and pluggable placement policies.

GPU amounts are milli-GPUs (``MILLI`` = one GPU), as the Alibaba GPU trace 2023 counts them.
A request is ``workers`` workers, each on its own node, each needing ``gpus_per_worker``
GPUs of ``gpu_milli`` each: ``gpu_milli`` < 1000 is a GPU-sharing worker (one GPU,
MIG slice / MPS / time-slicing share), 1000 a worker owning whole GPUs. A request is placed
whole or not at all.

Policies choose the node (and, for a sharing worker, the GPU) for each worker:

* ``first-fit``: the first node (in node order) where the worker fits;
* ``best-fit``: as the FGD paper's simulator defines it
  (kubernetes-scheduler-simulator ``best_fit_score.go``): the node minimising
  ``0.5 * (cpu_free - cpu_req) / 128000 + 0.5 * (gpu_free - gpu_req) / 8000`` (milli units),
  scored on the scheduler's integer 0..100 scale (:func:`best_fit_points`), equal best
  scores settled by the smallest node name; on that node the sharing worker goes to the
  fitting GPU with the least free share;
* ``fgd``: Fragmentation Gradient Descent (Weng et al., "Beware of Fragmentation",
  USENIX ATC '23): the node (and GPU) whose expected fragmentation, measured against the
  target workload, grows least, scored as the paper's simulator scores it
  (:func:`fgd_score`), equal best scores settled by the smallest node name, as the
  simulator's scheduler settles them;
* ``ours``: FGD's score, with equal best scores settled by node order (the earliest node),
  whatever the nodes are called.

Fragmentation follows the paper and its simulator (``pkg/utils/frag.go``): for a node ``n``
and a task ``m``, if ``m`` cannot run on ``n`` (GPU model, CPU, or not enough GPUs with a
large enough free share) every unallocated GPU share of ``n`` is a fragment; if it can, the
fragments are the GPUs whose free share is smaller than ``m``'s per-GPU demand. A CPU-only
task counts all of a node's free GPU share as fragment (it cannot use it). The node's
fragmentation against a workload ``M`` is ``sum_m p_m * F_n(m)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from nuro_ml.exceptions import CapacityError

MILLI = 1000
#: Normalisers of the simulator's best-fit score (its ``MaxSpecCpu`` and ``MaxSpecGpu``).
BEST_FIT_MAX_CPU_MILLI = 128_000
BEST_FIT_MAX_GPU_MILLI = 8_000


@dataclass(frozen=True)
class NodeSpec:
    """A node of a pool: its GPUs (count and model), CPU (milli-cores) and memory (MiB)."""

    name: str
    gpus: int
    gpu_model: str | None = None
    cpu_milli: int = 0
    memory_mib: int = 0

    def __post_init__(self) -> None:
        if not self.name:
            raise CapacityError("node name must not be empty")
        for label, value in (
            ("gpus", self.gpus),
            ("cpu_milli", self.cpu_milli),
            ("memory_mib", self.memory_mib),
        ):
            if int(value) < 0:
                raise CapacityError(f"node {self.name!r}: {label} must be >= 0, got {value}")

    @property
    def gpu_milli(self) -> int:
        return self.gpus * MILLI


@dataclass(frozen=True)
class Demand:
    """What one request needs: ``workers`` workers of ``gpus_per_worker`` x ``gpu_milli`` each.

    ``gpu_model`` may name several acceptable models separated by ``|`` (as openb's
    ``gpu_spec`` does); ``None`` accepts any. CPU and memory are per worker.
    """

    gpu_milli: int = MILLI
    gpus_per_worker: int = 1
    workers: int = 1
    cpu_milli: int = 0
    memory_mib: int = 0
    gpu_model: str | None = None

    def __post_init__(self) -> None:
        if self.workers <= 0:
            raise CapacityError(f"a request needs at least one worker, got {self.workers}")
        if self.gpus_per_worker < 0:
            raise CapacityError(f"gpus per worker must be >= 0, got {self.gpus_per_worker}")
        if not 0 <= self.gpu_milli <= MILLI:
            raise CapacityError(f"GPU share must be between 0 and {MILLI} milli-GPUs, got {self.gpu_milli}")
        if self.gpu_milli < MILLI and self.gpus_per_worker > 1:
            raise CapacityError(
                f"a GPU-sharing worker ({self.gpu_milli} milli-GPUs) uses one GPU, got {self.gpus_per_worker}"
            )
        if self.cpu_milli < 0 or self.memory_mib < 0:
            raise CapacityError(f"CPU and memory must be >= 0, got {self.cpu_milli}, {self.memory_mib}")

    @classmethod
    def from_milli(
        cls,
        total_milli: int,
        *,
        workers: int = 1,
        cpu_milli: int = 0,
        memory_mib: int = 0,
        gpu_model: str | None = None,
    ) -> Demand:
        """A request for ``total_milli`` milli-GPUs split evenly over ``workers`` nodes."""
        if total_milli <= 0 or total_milli % workers:
            raise CapacityError(
                f"{total_milli} milli-GPUs must be positive and split evenly over {workers} worker(s)"
            )
        per_worker = total_milli // workers
        if per_worker < MILLI:
            return cls(per_worker, 1, workers, cpu_milli, memory_mib, gpu_model)
        if per_worker % MILLI:
            raise CapacityError(
                f"{per_worker} milli-GPUs per worker: above one GPU a worker takes whole GPUs"
            )
        return cls(MILLI, per_worker // MILLI, workers, cpu_milli, memory_mib, gpu_model)

    @property
    def sharing(self) -> bool:
        return 0 < self.gpu_milli < MILLI

    @property
    def worker_milli(self) -> int:
        return self.gpu_milli * self.gpus_per_worker

    @property
    def total_milli(self) -> int:
        return self.worker_milli * self.workers

    def accepts(self, model: str | None) -> bool:
        if not self.gpu_model:
            return True
        wanted = [m for m in self.gpu_model.split("|") if m]
        return not wanted or (model is not None and model in wanted)


@dataclass(frozen=True)
class Share:
    """``milli`` milli-GPUs of GPU ``gpu`` (index on its node) of node ``node``."""

    node: str
    gpu: int
    milli: int


@dataclass(frozen=True)
class Placement:
    """Where a request was placed: one share per GPU used, workers in order."""

    shares: tuple[Share, ...]

    @property
    def nodes(self) -> tuple[str, ...]:
        """The nodes used, in worker order, each once."""
        return tuple(dict.fromkeys(s.node for s in self.shares))

    @property
    def total_milli(self) -> int:
        return sum(s.milli for s in self.shares)

    def by_node(self) -> dict[str, list[Share]]:
        out: dict[str, list[Share]] = {}
        for share in self.shares:
            out.setdefault(share.node, []).append(share)
        return out


@dataclass
class NodeState:
    """A node with what is still free on it: per-GPU milli, CPU and memory."""

    spec: NodeSpec
    gpu_free: list[int] = field(default_factory=list)
    cpu_free: int = 0
    memory_free: int = 0

    @classmethod
    def empty(cls, spec: NodeSpec) -> NodeState:
        return cls(spec, [MILLI] * spec.gpus, spec.cpu_milli, spec.memory_mib)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def free_milli(self) -> int:
        return sum(self.gpu_free)

    def key(self) -> tuple[str | None, int, tuple[int, ...]]:
        """What fragmentation depends on: model, free CPU, free shares (order-free)."""
        return (self.spec.gpu_model, self.cpu_free, tuple(sorted(self.gpu_free)))

    def group_key(self) -> tuple[str | None, int, int, tuple[int, ...]]:
        """Nodes with equal group keys are interchangeable for any placement decision."""
        return (self.spec.gpu_model, self.cpu_free, self.memory_free, tuple(sorted(self.gpu_free)))

    def copy(self) -> NodeState:
        return NodeState(self.spec, list(self.gpu_free), self.cpu_free, self.memory_free)

    def fits(self, demand: Demand) -> bool:
        """Can one worker of ``demand`` run here now (model, CPU, memory, GPUs)?"""
        if self.cpu_free < demand.cpu_milli or self.memory_free < demand.memory_mib:
            return False
        if demand.gpus_per_worker == 0 or demand.gpu_milli == 0:
            return True
        if not demand.accepts(self.spec.gpu_model):
            return False
        return sum(1 for free in self.gpu_free if free >= demand.gpu_milli) >= demand.gpus_per_worker

    def gpu_candidates(self, demand: Demand) -> list[int]:
        """GPUs a sharing worker could use (free share large enough), in index order."""
        return [i for i, free in enumerate(self.gpu_free) if free >= demand.gpu_milli]

    def exclusive_gpus(self, demand: Demand) -> list[int]:
        """The first fully free GPUs, as the simulator's ``AllocateExclusiveGpuId`` picks them."""
        return [i for i, free in enumerate(self.gpu_free) if free == MILLI][: demand.gpus_per_worker]

    def take(self, demand: Demand, gpus: Sequence[int]) -> list[Share]:
        if not self.fits(demand):
            raise CapacityError(f"node {self.name!r} cannot hold a worker of {demand}")
        shares = []
        for gpu in gpus:
            if self.gpu_free[gpu] < demand.gpu_milli:
                raise CapacityError(
                    f"node {self.name!r} GPU {gpu}: {self.gpu_free[gpu]} milli free, {demand.gpu_milli} asked"
                )
            self.gpu_free[gpu] -= demand.gpu_milli
            shares.append(Share(self.name, gpu, demand.gpu_milli))
        self.cpu_free -= demand.cpu_milli
        self.memory_free -= demand.memory_mib
        return shares

    def give_back(self, shares: Iterable[Share], *, cpu_milli: int = 0, memory_mib: int = 0) -> None:
        for share in shares:
            self.gpu_free[share.gpu] = min(MILLI, self.gpu_free[share.gpu] + share.milli)
        self.cpu_free = min(self.spec.cpu_milli, self.cpu_free + cpu_milli)
        self.memory_free = min(self.spec.memory_mib, self.memory_free + memory_mib)


@dataclass(frozen=True)
class TypicalTask:
    """One task shape of the target workload with its popularity (0..1)."""

    demand: Demand
    popularity: float


Workload = tuple[TypicalTask, ...]


def typical_workload(
    demands: Iterable[Demand], *, threshold: float = 0.95, include_cpu_only: bool = True
) -> Workload:
    """The target workload as the FGD simulator builds it from a trace (``GetTypicalPods``).

    Task shapes (CPU, GPU share, GPU count, model) are counted; the most popular shapes
    covering ``threshold`` of all tasks are kept and their popularities renormalised.
    """
    counts: dict[Demand, int] = {}
    total = 0
    for demand in demands:
        if not include_cpu_only and demand.total_milli == 0:
            continue
        shape = Demand(
            demand.gpu_milli if demand.gpus_per_worker else 0,
            demand.gpus_per_worker,
            1,
            demand.cpu_milli,
            0,
            demand.gpu_model,
        )
        counts[shape] = counts.get(shape, 0) + 1
        total += 1
    if not total:
        return ()
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], repr(kv[0])))
    kept: list[tuple[Demand, int]] = []
    covered = 0
    for shape, count in ordered:
        if covered >= threshold * total:
            break
        kept.append((shape, count))
        covered += count
    return tuple(TypicalTask(shape, count / covered) for shape, count in kept)


def task_fragmentation(node: NodeState, task: Demand) -> int:
    """``F_n(m)``: milli-GPUs of ``node`` that task ``m`` cannot use (paper, Section 4)."""
    free_total = node.free_milli
    if task.gpus_per_worker == 0 or task.gpu_milli == 0:
        # A CPU-only task leaves every free GPU share idle, whether or not it fits the CPU.
        return free_total
    if not task.accepts(node.spec.gpu_model) or node.cpu_free < task.cpu_milli:
        return free_total
    usable = sum(1 for free in node.gpu_free if free >= task.gpu_milli)
    if usable < task.gpus_per_worker:
        return free_total
    return sum(free for free in node.gpu_free if free < task.gpu_milli)


def node_fragmentation(node: NodeState, workload: Workload) -> float:
    """``F_n(M) = sum_m p_m F_n(m)``: expected milli-GPUs of ``node`` the workload cannot use."""
    return sum(t.popularity * task_fragmentation(node, t.demand) for t in workload)


class FragmentationCache:
    """Memoised :func:`node_fragmentation` keyed by the node state that determines it."""

    def __init__(self, workload: Workload) -> None:
        self.workload = workload
        self._memo: dict[tuple[str | None, int, tuple[int, ...]], float] = {}

    def __call__(self, node: NodeState) -> float:
        key = node.key()
        value = self._memo.get(key)
        if value is None:
            value = node_fragmentation(node, self.workload)
            self._memo[key] = value
        return value


def best_fit_score(node: NodeState, demand: Demand) -> float:
    """The simulator's best-fit score of putting one worker on ``node`` (lower is better)."""
    cpu_left = node.cpu_free - demand.cpu_milli
    gpu_left = node.free_milli - demand.worker_milli
    return 0.5 * cpu_left / BEST_FIT_MAX_CPU_MILLI + 0.5 * gpu_left / BEST_FIT_MAX_GPU_MILLI


def best_fit_points(node: NodeState, demand: Demand) -> int:
    """The simulator's best-fit node score: ``int64((1 - score) * 100)``, higher is better.

    Its min-max normalisation afterwards keeps exactly the nodes of the highest raw score at
    the top, so the choice is among the nodes with the most points.
    """
    return int((1.0 - best_fit_score(node, demand)) * 100)


def smallest_name(
    nodes: Sequence[NodeState], tied: Iterable[int], groups: Mapping[int, Sequence[int]]
) -> int:
    """The node with the smallest name among the tied candidates' groups.

    The FGD paper's simulator runs a kube-scheduler whose ``selectHost`` was changed, "for
    reproducibility", to keep the lexicographically smallest node name among equal best
    scores rather than draw one at random; the policies that follow the simulator settle
    ties the same way.
    """
    members = (member for rep in tied for member in groups.get(rep, (rep,)))
    return min(members, key=lambda member: (nodes[member].name, member))


@dataclass(frozen=True)
class Choice:
    """One worker's placement: node index in the node list and the GPUs it uses there."""

    node: int
    gpus: tuple[int, ...]


class PlacementPolicy(Protocol):
    """Chooses where one worker goes among nodes it fits; ``None`` if it fits none."""

    name: str

    def choose(
        self,
        nodes: Sequence[NodeState],
        candidates: Sequence[int],
        demand: Demand,
        groups: Mapping[int, Sequence[int]] | None = None,
    ) -> Choice | None:
        """``candidates`` stand for groups of interchangeable nodes: ``groups[c]`` lists the
        indexes of ``c``'s group, ``c`` first (a candidate absent from ``groups`` stands alone).
        The choice may name any member of a chosen group."""
        ...


def _default_gpus(node: NodeState, demand: Demand) -> tuple[int, ...]:
    if demand.gpus_per_worker == 0 or demand.gpu_milli == 0:
        return ()
    if demand.sharing:
        return (node.gpu_candidates(demand)[0],)
    return tuple(node.exclusive_gpus(demand))


def _best_fit_gpus(node: NodeState, demand: Demand) -> tuple[int, ...]:
    if demand.sharing:
        candidates = node.gpu_candidates(demand)
        return (min(candidates, key=lambda i: (node.gpu_free[i], i)),)
    return _default_gpus(node, demand)


class FirstFit:
    name = "first-fit"

    def choose(
        self,
        nodes: Sequence[NodeState],
        candidates: Sequence[int],
        demand: Demand,
        groups: Mapping[int, Sequence[int]] | None = None,
    ) -> Choice | None:
        if not candidates:
            return None
        index = min(candidates)
        return Choice(index, _default_gpus(nodes[index], demand))


class BestFit:
    name = "best-fit"

    def choose(
        self,
        nodes: Sequence[NodeState],
        candidates: Sequence[int],
        demand: Demand,
        groups: Mapping[int, Sequence[int]] | None = None,
    ) -> Choice | None:
        if not candidates:
            return None
        points = {index: best_fit_points(nodes[index], demand) for index in candidates}
        top = max(points.values())
        index = smallest_name(nodes, (i for i in candidates if points[i] == top), groups or {})
        return Choice(index, _best_fit_gpus(nodes[index], demand))


def fgd_score(delta: float) -> int:
    """The FGD simulator's node score for a fragmentation change of ``delta`` milli-GPUs.

    ``fgd_score.go``: ``int64(sigmoid((before - after) / 1000) * 100)``; higher is better.
    The truncation makes choices within a few tens of milli-GPUs equal; how equal best
    scores are settled is up to the policy.
    """
    return int(100.0 / (1.0 + math.exp(delta / 1000.0)))


class FragmentationGradient:
    """FGD: the choice whose expected fragmentation grows least, scored as the simulator does.

    Among the nodes with the best (integer) score, the one with the smallest name is chosen,
    as the simulator's scheduler does (:func:`smallest_name`). With node names in node-list
    order this fills the earliest nodes first among equally fragmenting choices, which the
    published FGD results rest on: a random draw spreads pods over every tied node and
    leaves about twice as many GPUs unallocated on the openb trace.
    """

    name = "fgd"

    def __init__(self, workload: Workload) -> None:
        if not workload:
            raise CapacityError("FGD needs a target workload (typical tasks with popularities)")
        self.frag = FragmentationCache(workload)

    def options(self, node: NodeState, demand: Demand) -> list[tuple[float, tuple[int, ...]]]:
        """(fragmentation increase, GPUs) for every way one worker can go on ``node``."""
        before = self.frag(node)
        gpu_sets = (
            [(i,) for i in node.gpu_candidates(demand)] if demand.sharing else [_default_gpus(node, demand)]
        )
        out = []
        for gpus in gpu_sets:
            after = node.copy()
            after.take(demand, gpus)
            out.append((self.frag(after) - before, gpus))
        return out

    def best_on(self, node: NodeState, demand: Demand) -> tuple[int, tuple[int, ...]]:
        """The node's score and the GPUs the simulator picks there (the first best-scored)."""
        scored = [(fgd_score(delta), gpus) for delta, gpus in self.options(node, demand)]
        top = max(score for score, _gpus in scored)
        return top, next(gpus for score, gpus in scored if score == top)

    def best_options(
        self, nodes: Sequence[NodeState], candidates: Sequence[int], demand: Demand
    ) -> list[tuple[int, tuple[int, ...]]]:
        """Every (node, GPUs) with the best score; on one node only its best-scored GPUs."""
        best: int | None = None
        ties: list[tuple[int, tuple[int, ...]]] = []
        for index in candidates:
            top, gpus = self.best_on(nodes[index], demand)
            if best is None or top > best:
                best, ties = top, [(index, gpus)]
            elif top == best:
                ties.append((index, gpus))
        return ties

    def settle(
        self,
        nodes: Sequence[NodeState],
        ties: Sequence[tuple[int, tuple[int, ...]]],
        demand: Demand,
        groups: Mapping[int, Sequence[int]],
    ) -> tuple[int, tuple[int, ...]]:
        """The tied node with the smallest name, over every member of the tied groups."""
        gpus_of = dict(ties)
        index = smallest_name(nodes, gpus_of, groups)
        if index in gpus_of:
            return index, gpus_of[index]
        # Interchangeable, but its GPUs may be in another order: pick them on the node itself.
        return index, self.best_on(nodes[index], demand)[1]

    def choose(
        self,
        nodes: Sequence[NodeState],
        candidates: Sequence[int],
        demand: Demand,
        groups: Mapping[int, Sequence[int]] | None = None,
    ) -> Choice | None:
        ties = self.best_options(nodes, candidates, demand)
        if not ties:
            return None
        index, gpus = self.settle(nodes, ties, demand, groups or {})
        return Choice(index, gpus)


class Ours(FragmentationGradient):
    """FGD's score, with equal best scores settled by node order (the earliest node).

    Filling the earliest nodes first among equally fragmenting choices keeps the later
    nodes whole, which is what multi-GPU gangs need. This is the simulator's rule when node
    names sort in node order (as openb's do); ours keeps to the pool's declared order (or
    the back end's) whatever the nodes are called.
    """

    name = "ours"

    def settle(
        self,
        nodes: Sequence[NodeState],
        ties: Sequence[tuple[int, tuple[int, ...]]],
        demand: Demand,
        groups: Mapping[int, Sequence[int]],
    ) -> tuple[int, tuple[int, ...]]:
        # A group's first member is its earliest node, so the earliest representative wins.
        return min(ties, key=lambda t: t[0])


PLACEMENT_POLICIES: tuple[str, ...] = ("first-fit", "best-fit", "fgd", "ours")


def get_placement_policy(name: str, workload: Workload = ()) -> PlacementPolicy:
    """A placement policy by name; ``fgd`` and ``ours`` need the target workload."""
    if name == "first-fit":
        return FirstFit()
    if name == "best-fit":
        return BestFit()
    if name == "fgd":
        return FragmentationGradient(workload)
    if name == "ours":
        return Ours(workload)
    raise CapacityError(f"unknown placement policy {name!r}; choose one of {list(PLACEMENT_POLICIES)}")


def place(
    nodes: Sequence[NodeState],
    demand: Demand,
    policy: PlacementPolicy,
    *,
    commit: bool = False,
    allowed: Callable[[NodeState], bool] | None = None,
) -> Placement | None:
    """Place every worker of ``demand`` on distinct nodes, or none (``None``).

    With ``commit`` the nodes' free resources are updated; otherwise they are left as given.
    Interchangeable nodes (same model and free resources) are offered to the policy once,
    the first of them standing for the rest (the policy sees the whole group and may take
    any member), which keeps large clusters fast without changing any choice.
    """
    work = list(nodes) if commit else [n.copy() for n in nodes]
    used: set[int] = set()
    shares: list[Share] = []
    for _worker in range(demand.workers):
        first_of: dict[tuple[str | None, int, int, tuple[int, ...]], int] = {}
        groups: dict[int, list[int]] = {}
        for index, node in enumerate(work):
            if index in used or not node.fits(demand) or (allowed is not None and not allowed(node)):
                continue
            rep = first_of.setdefault(node.group_key(), index)
            groups.setdefault(rep, []).append(index)
        choice = policy.choose(work, list(groups), demand, groups)
        if choice is None:
            if commit:
                _undo(work, shares, demand)
            return None
        used.add(choice.node)
        shares.extend(work[choice.node].take(demand, choice.gpus))
    return Placement(tuple(shares))


def _undo(nodes: Sequence[NodeState], shares: Sequence[Share], demand: Demand) -> None:
    by_name = {n.name: n for n in nodes}
    for node_name in dict.fromkeys(s.node for s in shares):
        by_name[node_name].give_back(
            [s for s in shares if s.node == node_name],
            cpu_milli=demand.cpu_milli,
            memory_mib=demand.memory_mib,
        )


def node_states(
    specs: Iterable[NodeSpec], held: Mapping[str, Iterable[Share]] | None = None
) -> list[NodeState]:
    """Node states from specs minus shares already held (by node name); CPU/memory untouched."""
    states = [NodeState.empty(spec) for spec in specs]
    by_name = {s.name: s for s in states}
    for node_name, shares in (held or {}).items():
        node = by_name.get(node_name)
        if node is None:
            continue
        for share in shares:
            if 0 <= share.gpu < len(node.gpu_free):
                node.gpu_free[share.gpu] -= share.milli
    return states
