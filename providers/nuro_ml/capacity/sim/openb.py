"""The Alibaba GPU cluster trace 2023 (openb) as a cluster: node lists, pod demands, a generator.

``openb_node_list_gpu_node.csv`` columns: ``sn`` (node name), ``cpu_milli``, ``memory_mib``,
``gpu`` (count), ``model``. ``openb_pod_list_*.csv``: see :mod:`nuro_ml.capacity.sim.pod_list`,
whose parser this module shares with the timed replay.

The trace itself is research-only licensed and not shipped: :func:`generate_openb_like`
writes files in the same format, shaped like openb (node mix of GPU models and sizes, 44%
of GPU pods sharing a GPU, about 1% multi-GPU pods, 13% CPU-only pods).
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterable, Sequence
from pathlib import Path

from nuro_ml.capacity.placement import MILLI, Demand, NodeSpec
from nuro_ml.capacity.sim.pod_list import ALIBABA_COLUMNS, Pod, read_pod_list, whole_number_in
from nuro_ml.exceptions import CapacityError

NODE_COLUMNS = ("sn", "cpu_milli", "memory_mib", "gpu", "model")


def load_node_list(path: str | Path) -> tuple[NodeSpec, ...]:
    """Read an openb node list; CPU-only nodes (0 GPUs) are kept, they hold CPU-only pods."""
    path = Path(path)
    if not path.is_file():
        raise CapacityError(f"node list {path} does not exist")
    nodes: list[NodeSpec] = []
    seen: set[str] = set()
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in NODE_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise CapacityError(
                f"{path}:1: not an openb node list, missing columns {missing} (needs {list(NODE_COLUMNS)})"
            )
        for line, row in enumerate(reader, start=2):
            name = (row["sn"] or "").strip()
            if not name:
                raise CapacityError(f"{path}:{line}: column 'sn' (node name) is empty")
            if name in seen:
                raise CapacityError(f"{path}:{line}: node {name!r} is listed twice")
            seen.add(name)
            model = (row["model"] or "").strip()
            nodes.append(
                NodeSpec(
                    name=name,
                    gpus=whole_number_in(row["gpu"], path, line, "gpu"),
                    gpu_model=None if model in ("", "nan") else model,
                    cpu_milli=whole_number_in(row["cpu_milli"], path, line, "cpu_milli"),
                    memory_mib=whole_number_in(row["memory_mib"], path, line, "memory_mib"),
                )
            )
    if not nodes:
        raise CapacityError(f"{path}: node list has no nodes")
    return tuple(nodes)


def load_pods(path: str | Path) -> tuple[Pod, ...]:
    """Read every pod of an openb pod list (CPU-only pods included) with its demand."""
    return tuple(pod for _line, pod in read_pod_list(path))


def write_node_list(nodes: Iterable[NodeSpec], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(NODE_COLUMNS)
        for node in nodes:
            writer.writerow([node.name, node.cpu_milli, node.memory_mib, node.gpus, node.gpu_model or ""])
    return path


def write_pod_list(pods: Iterable[Pod], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(ALIBABA_COLUMNS)
        for pod in pods:
            d = pod.demand
            writer.writerow(
                [
                    pod.name,
                    d.cpu_milli,
                    d.memory_mib,
                    d.gpus_per_worker,
                    d.gpu_milli if d.gpus_per_worker else 0,
                    d.gpu_model or "",
                    pod.qos,
                    "Succeeded" if pod.deleted is not None else "Running",
                    int(pod.created),
                    "" if pod.deleted is None else int(pod.deleted),
                    "" if pod.scheduled is None else int(pod.scheduled),
                ]
            )
    return path


#: Node shapes of openb's GPU nodes: (model, GPUs, CPU milli, memory MiB, share of nodes %).
OPENB_NODE_MIX: tuple[tuple[str, int, int, int, float], ...] = (
    ("G2", 8, 96000, 393216, 45.3),
    ("T4", 2, 104000, 524288, 31.9),
    ("P100", 2, 16000, 122880, 8.8),
    ("G3", 8, 128000, 786432, 3.2),
    ("V100M16", 4, 32000, 131072, 2.3),
    ("P100", 2, 64000, 262144, 1.8),
    ("V100M32", 8, 96000, 786432, 1.7),
    ("V100M16", 1, 8000, 32768, 1.6),
    ("T4", 4, 96000, 393216, 1.4),
    ("V100M32", 4, 48000, 376832, 0.7),
    ("V100M16", 8, 64000, 262144, 0.6),
    ("A10", 1, 128000, 1048576, 0.2),
    ("P100", 1, 8000, 61440, 0.3),
)

#: GPU shares of openb's sharing pods (milli, weight %).
OPENB_SHARE_MIX: tuple[tuple[int, float], ...] = (
    (800, 35.0),
    (500, 29.1),
    (600, 13.0),
    (300, 11.1),
    (200, 9.0),
    (400, 1.8),
    (100, 1.0),
)

#: (GPUs per pod, CPU milli choices, memory MiB) of openb's whole-GPU pods; weights are
#: shares of GPU pods in %: 55% one GPU, 0.6% eight, 0.2% each two and four.
OPENB_WHOLE_MIX: tuple[tuple[int, tuple[int, ...], int, float], ...] = (
    (1, (3152, 11300, 11908, 4000, 8000, 12000), 31250, 55.2),
    (2, (16200, 6000, 30200, 17400), 66560, 0.2),
    (4, (32200, 32000, 60200), 132096, 0.2),
    (8, (88000, 64200, 120000, 64000), 327680, 0.6),
)
_SHARE_CPU = (3152, 4000, 6000, 8000, 2000, 12000)
_CPU_ONLY_CPU = (12500, 32000, 8000, 15400, 16500, 4000)


def generate_openb_like(
    *, nodes: int = 1213, pods: int | None = None, seed: int = 0, sharing_share: float = 0.44
) -> tuple[tuple[NodeSpec, ...], tuple[Pod, ...]]:
    """A cluster and a pod list shaped like openb (default: its size, 8,152 pods per 1,213 nodes).

    ``sharing_share`` is the share of GPU pods that share a GPU (openb: 3,078 of 7,064).
    """
    if nodes <= 0:
        raise CapacityError(f"a cluster needs at least one node, got {nodes}")
    rng = random.Random(seed)
    pods = pods if pods is not None else round(nodes * 8152 / 1213)
    weights = [w for *_shape, w in OPENB_NODE_MIX]
    specs = []
    for index in range(nodes):
        model, gpus, cpu, memory, _w = rng.choices(OPENB_NODE_MIX, weights)[0]
        specs.append(NodeSpec(f"openb-node-{index:04d}", gpus, model, cpu, memory))
    whole_weights = [w for *_shape, w in OPENB_WHOLE_MIX]
    share_weights = [w for _m, w in OPENB_SHARE_MIX]
    out = []
    t = 0
    for index in range(pods):
        t += int(rng.expovariate(1 / 1500.0))
        kind = rng.random()
        if kind < 0.1335:  # CPU-only pods (1,088 of 8,152)
            demand = Demand(0, 0, 1, rng.choice(_CPU_ONLY_CPU), rng.choice((16384, 51200, 65536)))
        elif rng.random() < sharing_share:
            milli = rng.choices([m for m, _w in OPENB_SHARE_MIX], share_weights)[0]
            demand = Demand(milli, 1, 1, rng.choice(_SHARE_CPU), rng.choice((12288, 16384, 31250)))
        else:
            gpus, cpus, memory, _w = rng.choices(OPENB_WHOLE_MIX, whole_weights)[0]
            demand = Demand(MILLI, gpus, 1, rng.choice(cpus), memory)
        runtime = int(rng.lognormvariate(8.5, 1.5)) + 60
        qos = rng.choices(("LS", "Burstable", "BE"), (0.5, 0.3, 0.2))[0]
        out.append(Pod(f"openb-pod-{index:04d}", demand, qos, float(t), float(t), float(t + runtime)))
    return tuple(specs), tuple(out)


def cluster_milli(nodes: Sequence[NodeSpec]) -> int:
    return sum(n.gpu_milli for n in nodes)
