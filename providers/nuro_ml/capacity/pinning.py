"""Where a lease put a job, in the form each engine takes to run it there.

The GPU-capacity sensor pushes its lease as XCom (``key="lease"``): the nodes and GPU shares
it holds. The launchers read it back with :func:`lease_from_xcom` and pin the job:

* Ray: the entrypoint's label selector on Ray's built-in ``ray.io/node-id`` label, and the
  node ids in ``NURO_ML_LEASE_NODES`` for the job's own tasks and actors;
* KubeRay: a required node affinity on ``kubernetes.io/hostname`` for every GPU pod of the
  cluster and, when a Kueue queue admits the RayJob, a topology-aware scheduling request at
  the level the lease was placed at (:func:`pin_kueue_topology`);
* Slurm: ``--nodelist`` and ``--gres=gpu:N`` per node.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nuro_ml.exceptions import CapacityError
from nuro_ml.kube.crds import KUEUE_QUEUE_LABEL
from nuro_ml.kube.topology import (
    HOSTNAME_LEVEL,
    TopologyRequest,
    has_topology_request,
    rayjob_pod_sets,
    set_topology_request,
)

#: Environment variable carrying the lease's node names (comma-separated) into the job.
LEASE_NODES_ENV = "NURO_ML_LEASE_NODES"
#: Ray's built-in node label with the node id.
RAY_NODE_ID_LABEL = "ray.io/node-id"
KUBE_HOSTNAME_LABEL = HOSTNAME_LEVEL
#: The whole-GPU resource the NVIDIA device plugin advertises (MIG slices have their own names).
KUBE_GPU_RESOURCE = "nvidia.com/gpu"


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

    def gpus_on(self, node: str) -> int:
        """GPUs (whole or shared) the lease holds on ``node``."""
        if not self.shares:
            return self.gpus_per_node
        return sum(1 for name, _gpu, _milli in self.shares if name == node)


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


def _whole_gpus(template: Mapping[str, Any]) -> int:
    total = 0
    for container in (template.get("spec") or {}).get("containers") or []:
        resources = container.get("resources") or {}
        value = (resources.get("limits") or {}).get(KUBE_GPU_RESOURCE) or (
            resources.get("requests") or {}
        ).get(KUBE_GPU_RESOURCE)
        if value is not None and str(value).isdigit():
            total += int(str(value))
    return total


def lease_topology_request(
    placement: LeasePlacement, *, pods: int, gpus_per_pod: int, gpu_pod_sets: int
) -> TopologyRequest:
    """Kueue's topology request for one GPU pod set of a job running under ``placement``.

    * A lease on one node: the pod set is required on one host (``kubernetes.io/hostname``).
    * A lease spread evenly over several nodes, held by this pod set alone in whole GPUs per
      pod: each node's share is a slice of pods required on one host
      (``podset-slice-required-topology`` + ``podset-slice-size``), so Kueue admits it only where
      every node's pods fit on that node, as the gate counted.
    * Otherwise (uneven split, GPUs shared with other pod sets, GPU slices): unconstrained;
      TAS still counts the pods on the nodes the node affinity allows.

    :param pods: pods in the pod set.
    :param gpus_per_pod: whole ``nvidia.com/gpu`` per pod (0 for GPU slices such as MIG).
    :param gpu_pod_sets: pod sets of the job that ask for GPUs.
    """
    if len(placement.nodes) == 1:
        return TopologyRequest(required=HOSTNAME_LEVEL)
    per_node = {node: placement.gpus_on(node) for node in placement.nodes}
    counts = set(per_node.values())
    if gpu_pod_sets == 1 and gpus_per_pod > 0 and len(counts) == 1:
        held = counts.pop()
        slice_size, left = divmod(held, gpus_per_pod)
        if left == 0 and slice_size >= 1 and slice_size * len(per_node) == pods:
            return TopologyRequest(slice_required=HOSTNAME_LEVEL, slice_size=slice_size)
    return TopologyRequest(unconstrained=True)


def pin_kueue_topology(manifest: dict[str, Any], placement: LeasePlacement) -> dict[str, TopologyRequest]:
    """Add Kueue's topology request to each GPU pod set of a Kueue-managed RayJob.

    Without the ``kueue.x-k8s.io/queue-name`` label nothing changes. A pod set whose template
    already carries a topology request keeps it: the node affinity pins it to the lease's
    nodes either way. Returns the requests set, by pod set name.
    """
    labels = (manifest.get("metadata") or {}).get("labels") or {}
    if KUEUE_QUEUE_LABEL not in labels:
        return {}
    gpu_sets = [pod_set for pod_set in rayjob_pod_sets(manifest) if _requests_gpus(pod_set.template)]
    placed: dict[str, TopologyRequest] = {}
    for pod_set in gpu_sets:
        if has_topology_request(pod_set.template):
            continue
        request = lease_topology_request(
            placement,
            pods=pod_set.count,
            gpus_per_pod=_whole_gpus(pod_set.template),
            gpu_pod_sets=len(gpu_sets),
        )
        set_topology_request(pod_set.template, request)
        placed[pod_set.name] = request
    return placed


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
