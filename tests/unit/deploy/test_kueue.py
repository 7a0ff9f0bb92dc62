"""deploy/helm/kueue: valid against the shipped Kueue CRDs, consistent with each other, with the
gpu_cluster Terraform module (GPU types, team quotas, queue names) and with the provider (RayJob
manifests, the Kueue capacity back end, the KubeRay operator values)."""

from __future__ import annotations

import copy
from collections import Counter
from decimal import Decimal
from typing import Any

import hcl2
import pytest
import yaml
from nuro_ml.capacity.backends.kueue import KueueBackendConfig, queue_pools
from nuro_ml.kube.crds import KUEUE_GROUP, KUEUE_QUEUE_LABEL, KUEUE_VERSION, crd_files, crd_version, load_crd
from nuro_ml.kube.rayjob import GPU_TOLERATION, GpuScheduling, RayJobSpec, Toleration, WorkerGroup
from nuro_ml.kube.schema import schema_for
from nuro_ml.kube.validation import is_dns1123_label, is_dns1123_subdomain

from tests.unit.deploy.deploy_files import HELM_DIR, KUEUE_DIR, REPO, yaml_documents

GPU_RESOURCE = "nvidia.com/gpu"
#: Node label and taint key the gpu_cluster module puts on GPU nodes (terraform/modules/gpu_cluster/eks.tf).
GPU_TYPE_LABEL = "nuro.ai/gpu-type"
TERRAFORM_AWS = REPO / "terraform" / "environments" / "aws"
DOCS = {path.name: yaml_documents(path) for path in sorted(KUEUE_DIR.glob("*.yaml"))}
ALL = [(name, doc) for name, docs in DOCS.items() for doc in docs]


def _unquote(node: Any) -> Any:
    """python-hcl2 keeps the quotes of HCL strings."""
    if isinstance(node, str):
        return node.strip('"')
    if isinstance(node, list):
        return [_unquote(n) for n in node]
    if isinstance(node, dict):
        return {_unquote(k): _unquote(v) for k, v in node.items()}
    return node


def terraform_defaults() -> dict[str, Any]:
    """Default values of the AWS environment's variables, which it passes to gpu_cluster."""
    with (TERRAFORM_AWS / "variables.tf").open() as handle:
        blocks = hcl2.load(handle)["variable"]
    return {name: spec.get("default") for block in _unquote(blocks) for name, spec in block.items()}


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in ALL if doc["kind"] == kind]


def crd_for(api_version: str, kind: str) -> Any:
    group, _, version = api_version.partition("/")
    for filename in crd_files():
        group_of_file, _, plural_yaml = filename.partition("_")
        if group_of_file != group:
            continue
        plural = plural_yaml.removesuffix(".yaml")
        if load_crd(group, plural)["spec"]["names"]["kind"] == kind:
            return crd_version(group, version, plural)
    raise AssertionError(f"no CRD shipped for {kind} in {group}")


def violations(doc: dict[str, Any]) -> list[str]:
    schema = schema_for(crd_for(doc["apiVersion"], doc["kind"]))
    return [str(v) for v in schema.validate(schema.normalize(doc))]


@pytest.mark.parametrize(("filename", "doc"), ALL, ids=[f"{n}:{d['metadata']['name']}" for n, d in ALL])
def test_manifest_is_valid(filename: str, doc: dict[str, Any]) -> None:
    meta = doc["metadata"]
    if doc["apiVersion"] == "v1":
        assert doc["kind"] == "Namespace" and is_dns1123_label(meta["name"])
        return
    # The version the provider's Kueue back end reads, served by the shipped CRDs and by the Kueue
    # release the Terraform module installs.
    assert doc["apiVersion"] == f"{KUEUE_GROUP}/{KUEUE_VERSION}"
    crd = crd_for(doc["apiVersion"], doc["kind"])
    assert is_dns1123_subdomain(meta["name"])
    assert ("namespace" in meta) == crd.namespaced, f"{filename}: {meta['name']} namespace scope"
    assert violations(doc) == []


def test_the_schema_check_rejects_broken_queues() -> None:
    queue = copy.deepcopy(of_kind("ClusterQueue")[0])
    no_cohort = copy.deepcopy(queue)
    del no_cohort["spec"]["cohort"]  # borrowing limits need a cohort (CEL rule)
    assert any("borrowingLimit" in v or "cohort" in v for v in violations(no_cohort))
    short = copy.deepcopy(queue)
    short["spec"]["resourceGroups"][0]["flavors"][0]["resources"].pop()  # resources != coveredResources
    assert violations(short)
    typo = copy.deepcopy(queue)
    typo["spec"]["queueingStrategy"] = "FIFO"
    assert any("queueingStrategy" in v for v in violations(typo))


def test_queues_reference_existing_flavors_queues_and_namespaces() -> None:
    flavors = {f["metadata"]["name"] for f in of_kind("ResourceFlavor")}
    cluster_queues = {q["metadata"]["name"]: q for q in of_kind("ClusterQueue")}
    namespaces = {n["metadata"]["name"]: n["metadata"].get("labels") or {} for n in of_kind("Namespace")}
    used: set[str] = set()
    for queue in cluster_queues.values():
        seen_in_queue: list[str] = []
        for group in queue["spec"]["resourceGroups"]:
            for flavor in group["flavors"]:
                assert flavor["name"] in flavors, (
                    f"{queue['metadata']['name']}: unknown flavor {flavor['name']}"
                )
                seen_in_queue.append(flavor["name"])
        assert len(seen_in_queue) == len(set(seen_in_queue)), "a flavor may appear in one resource group only"
        used.update(seen_in_queue)
    assert used == flavors, f"flavors no queue uses: {flavors - used}"
    assert len({q["spec"]["cohort"] for q in cluster_queues.values()}) == 1
    local = of_kind("LocalQueue")
    assert Counter(q["metadata"]["namespace"] for q in local) == Counter(namespaces.keys())
    for queue in local:
        target = cluster_queues[queue["spec"]["clusterQueue"]]
        selector = target["spec"]["namespaceSelector"]["matchLabels"]
        labels = namespaces[queue["metadata"]["namespace"]]
        assert selector.items() <= labels.items(), f"{queue['metadata']['namespace']} cannot use {target}"
    # Every namespace is selected by exactly one ClusterQueue: one team's quota per namespace.
    for name, labels in namespaces.items():
        selecting = [
            q
            for q in cluster_queues.values()
            if q["spec"]["namespaceSelector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(selecting) == 1, name


def _gpu_flavors() -> dict[str, dict[str, Any]]:
    return {
        f["metadata"]["name"]: f
        for f in of_kind("ResourceFlavor")
        if GPU_TYPE_LABEL in f["spec"].get("nodeLabels", {})
    }


def test_queues_match_the_terraform_gpu_cluster() -> None:
    defaults = terraform_defaults()
    gpu_types = {pool["gpu_type"] for pool in defaults["gpu_pools"].values()}
    assert set(_gpu_flavors()) == gpu_types
    for name, flavor in _gpu_flavors().items():
        assert flavor["spec"]["nodeLabels"] == {GPU_TYPE_LABEL: name}
    quotas = {
        queue["metadata"]["name"]: {
            flavor["name"]: {
                "gpus": int(flavor["resources"][0]["nominalQuota"]),
                "borrowing_limit": int(flavor["resources"][0]["borrowingLimit"]),
            }
            for group in queue["spec"]["resourceGroups"]
            if GPU_RESOURCE in group["coveredResources"]
            for flavor in group["flavors"]
        }
        for queue in of_kind("ClusterQueue")
    }
    assert quotas == defaults["team_quotas"]
    assert {q["spec"]["cohort"] for q in of_kind("ClusterQueue")} == {defaults["cluster_name"]}
    # The module's kueue_local_queues output lists "<namespace>/<name>" per team.
    local = sorted(f"{q['metadata']['namespace']}/{q['metadata']['name']}" for q in of_kind("LocalQueue"))
    assert local == sorted(f"{team}/{team}" for team in defaults["team_quotas"])
    # Guaranteed quota never exceeds what the node groups can scale to.
    for gpu_type in gpu_types:
        capacity = sum(
            (pool["on_demand_max"] + pool["spot_max"]) * pool["gpus_per_node"]
            for pool in defaults["gpu_pools"].values()
            if pool["gpu_type"] == gpu_type
        )
        assert sum(q.get(gpu_type, {}).get("gpus", 0) for q in quotas.values()) <= capacity, gpu_type


def test_rayjobs_for_each_flavor_validate_and_tolerate_the_gpu_nodes() -> None:
    for name, flavor in _gpu_flavors().items():
        team = next(
            q
            for q in of_kind("ClusterQueue")
            if any(f["name"] == name for g in q["spec"]["resourceGroups"] for f in g["flavors"])
        )
        local_queue = next(
            q for q in of_kind("LocalQueue") if q["spec"]["clusterQueue"] == team["metadata"]["name"]
        )
        scheduling = GpuScheduling(
            node_selector=flavor["spec"]["nodeLabels"],
            tolerations=[Toleration(**t) for t in flavor["spec"]["tolerations"]],
        )
        spec = RayJobSpec(
            entrypoint="python train_xgboost.py",
            image="nuro-ml-platform:0.1.0",
            queue_name=local_queue["metadata"]["name"],
            gpu_types={name: scheduling},
            workers=[WorkerGroup(name="gpu", replicas=2, gpus=1, gpu_type=name)],
        )
        manifest = spec.to_manifest(name=f"train-{name}", namespace=local_queue["metadata"]["namespace"])
        assert manifest["metadata"]["labels"][KUEUE_QUEUE_LABEL] == local_queue["metadata"]["name"]
        pod = manifest["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]
        assert pod["nodeSelector"] == flavor["spec"]["nodeLabels"]
        # The module taints GPU nodes nvidia.com/gpu=<type>:NoSchedule; the flavor's toleration and
        # the provider's default GPU toleration both match that taint.
        taint = {"key": GPU_RESOURCE, "value": name, "effect": "NoSchedule"}
        for toleration in [*pod["tolerations"], GPU_TOLERATION.to_k8s()]:
            if toleration.get("key") == taint["key"]:
                assert toleration.get("effect") == taint["effect"]
                assert toleration["operator"] == "Exists" or toleration.get("value") == taint["value"]


def test_the_kueue_backend_reports_the_quota_as_pools() -> None:
    queues = of_kind("ClusterQueue")
    config = KueueBackendConfig(gpu_type_label=GPU_TYPE_LABEL)
    pools = {p.pool: p for p in queue_pools(queues, of_kind("ResourceFlavor"), config)}
    expected: Counter[str] = Counter()
    for queue in queues:
        for group in queue["spec"]["resourceGroups"]:
            if GPU_RESOURCE not in group["coveredResources"]:
                continue
            for flavor in group["flavors"]:
                (resource,) = flavor["resources"]
                expected[flavor["name"]] += int(Decimal(str(resource["nominalQuota"])))
    assert {name: (p.total_gpus, p.free_gpus) for name, p in pools.items()} == {
        name: (total, total) for name, total in expected.items()
    }
    for name, flavor in _gpu_flavors().items():
        assert pools[name].gpu_type == flavor["spec"]["nodeLabels"][GPU_TYPE_LABEL]


def test_kuberay_operator_watches_the_team_namespaces() -> None:
    values = yaml.safe_load((HELM_DIR / "kuberay-operator" / "values.yaml").read_text())
    assert sorted(values["watchNamespace"]) == sorted(n["metadata"]["name"] for n in of_kind("Namespace"))


def test_readme_states_the_gpus_each_flavor_needs() -> None:
    readme = (REPO / "deploy" / "README.md").read_text()
    config = KueueBackendConfig(gpu_type_label=GPU_TYPE_LABEL)
    pools = queue_pools(of_kind("ClusterQueue"), of_kind("ResourceFlavor"), config)
    stated = ", ".join(f"{p.pool}: {p.total_gpus}" for p in pools if p.pool in _gpu_flavors())
    assert f"({stated} as written)" in readme
