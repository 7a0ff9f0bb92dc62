"""Where a lease put a job, in the form each engine takes to run it there.

The GPU-capacity sensor pushes its lease as XCom (``key="lease"``): the nodes and GPU shares
it holds. The launchers read it back with :func:`lease_from_xcom` and pin the job:

* Ray: the entrypoint's label selector on Ray's built-in ``ray.io/node-id`` label, and the
  node ids in ``NURO_ML_LEASE_NODES`` for the job's own tasks and actors;
* KubeRay: a required node affinity on ``kubernetes.io/hostname`` for every pod of the
  cluster (and, with Kueue, a topology request naming the same nodes);
* Slurm: ``--nodelist`` and ``--gres=gpu:N`` per node.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nuro_ml.exceptions import CapacityError

#: Environment variable carrying the lease's node names (comma-separated) into the job.
LEASE_NODES_ENV = "NURO_ML_LEASE_NODES"
#: Ray's built-in node label with the node id.
RAY_NODE_ID_LABEL = "ray.io/node-id"
KUBE_HOSTNAME_LABEL = "kubernetes.io/hostname"


@dataclass(frozen=True)
class LeasePlacement:
    """The nodes a lease holds GPUs on, with the GPUs (and shares) per node."""

    lease_id: str
    nodes: tuple[str, ...]
    #: (node, GPU number, milli-GPUs) per GPU held.
    shares: tuple[tuple[str, int, int], ...]
    gpus: int
    gpu_model: str | None = None

    @property
    def gpus_per_node(self) -> int:
        return self.gpus // max(1, len(self.nodes))

    def gpu_indices(self, node: str) -> list[int]:
        return [gpu for name, gpu, _milli in self.shares if name == node]


def lease_from_xcom(value: Mapping[str, Any] | None, *, source: str) -> LeasePlacement | None:
    """Read the sensor's lease XCom; ``None`` when the lease names no nodes (a pool counted whole)."""
    if value is None:
        raise CapacityError(f"{source}: no lease XCom found; run the GPU-capacity sensor first")
    if not isinstance(value, Mapping) or "lease_id" not in value:
        raise CapacityError(f"{source}: lease XCom must be the GPU-capacity sensor's lease, got {value!r}")
    nodes = tuple(str(n) for n in value.get("node_names") or ())
    if not nodes:
        return None
    shares = tuple((str(n), int(g), int(m)) for n, g, m in value.get("shares") or ())
    return LeasePlacement(
        lease_id=str(value["lease_id"]),
        nodes=nodes,
        shares=shares,
        gpus=int(value.get("gpus") or len(shares)),
        gpu_model=value.get("gpu_model"),
    )


def ray_label_selector(placement: LeasePlacement) -> dict[str, str]:
    """Ray label selector for the lease's nodes (``in(...)`` for several)."""
    nodes = placement.nodes
    return {RAY_NODE_ID_LABEL: nodes[0] if len(nodes) == 1 else f"in({','.join(nodes)})"}


def kube_node_affinity(nodes: Sequence[str]) -> dict[str, Any]:
    """A pod ``affinity`` requiring one of ``nodes`` (by hostname label)."""
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": KUBE_HOSTNAME_LABEL, "operator": "In", "values": list(nodes)}
                        ]
                    }
                ]
            }
        }
    }


def slurm_nodelist(placement: LeasePlacement) -> str:
    return ",".join(placement.nodes)


def _requests_gpus(template: Mapping[str, Any]) -> bool:
    for container in (template.get("spec") or {}).get("containers") or []:
        resources = container.get("resources") or {}
        for part in ("requests", "limits"):
            if any(key.startswith("nvidia.com/") for key in resources.get(part) or {}):
                return True
    return False


def pin_rayjob_manifest(manifest: dict[str, Any], nodes: Sequence[str]) -> dict[str, Any]:
    """Require the lease's nodes for every GPU pod of a RayJob (head and worker groups).

    Pods without GPUs stay free to run anywhere. An affinity already in a template is kept
    and the node requirement added to each of its node selector terms.
    """
    cluster = (manifest.get("spec") or {}).get("rayClusterSpec") or {}
    groups = [cluster.get("headGroupSpec") or {}, *(cluster.get("workerGroupSpecs") or [])]
    requirement = {"key": KUBE_HOSTNAME_LABEL, "operator": "In", "values": list(nodes)}
    for group in groups:
        template = group.get("template") or {}
        if not _requests_gpus(template):
            continue
        spec = template.setdefault("spec", {})
        required = (
            spec.setdefault("affinity", {})
            .setdefault("nodeAffinity", {})
            .setdefault("requiredDuringSchedulingIgnoredDuringExecution", {})
        )
        terms = required.setdefault("nodeSelectorTerms", [])
        if not terms:
            terms.append({})
        for term in terms:
            expressions = term.setdefault("matchExpressions", [])
            expressions[:] = [e for e in expressions if e.get("key") != KUBE_HOSTNAME_LABEL]
            expressions.append(dict(requirement))
    return manifest
