"""deploy/helm/kueue: valid against the shipped Kueue CRDs, consistent with each other and with
the provider (GPU types of RayJobSpec, the Kueue capacity back end, the KubeRay operator values)."""

from __future__ import annotations

import copy
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
import yaml
from nuro_ml.capacity.backends.kueue import KueueBackendConfig, queue_pools
from nuro_ml.kube.crds import KUEUE_QUEUE_LABEL, crd_files, crd_version, load_crd
from nuro_ml.kube.rayjob import DEFAULT_GPU_TYPES, RayJobSpec, WorkerGroup
from nuro_ml.kube.schema import schema_for
from nuro_ml.kube.validation import is_dns1123_label, is_dns1123_subdomain

from tests.unit.deploy.deploy_files import HELM_DIR, KUEUE_DIR, yaml_documents

GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
DOCS = {path.name: yaml_documents(path) for path in sorted(KUEUE_DIR.glob("*.yaml"))}
ALL = [(name, doc) for name, docs in DOCS.items() for doc in docs]


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
    assert doc["apiVersion"].startswith("kueue.x-k8s.io/")
    crd = crd_for(doc["apiVersion"], doc["kind"])
    storage = next(v for v in load_crd(crd.group, crd.plural)["spec"]["versions"] if v.get("storage"))
    assert crd.version == storage["name"], f"{filename}: write the storage version {storage['name']}"
    assert is_dns1123_subdomain(meta["name"])
    assert ("namespace" in meta) == crd.namespaced, f"{filename}: {meta['name']} namespace scope"
    assert violations(doc) == []


def test_the_schema_check_rejects_broken_queues() -> None:
    queue = copy.deepcopy(of_kind("ClusterQueue")[0])
    no_cohort = copy.deepcopy(queue)
    del no_cohort["spec"]["cohortName"]  # borrowing limits need a cohort (CEL rule)
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
    assert len({q["spec"]["cohortName"] for q in cluster_queues.values()}) == 1
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
        if GPU_PRODUCT_LABEL in f["spec"].get("nodeLabels", {})
    }


def test_gpu_flavors_match_the_gpu_types_rayjobs_request() -> None:
    by_product = {
        scheduling.node_selector[GPU_PRODUCT_LABEL]: gpu_type
        for gpu_type, scheduling in DEFAULT_GPU_TYPES.items()
    }
    local_queue = of_kind("LocalQueue")[0]
    assert _gpu_flavors()
    for name, flavor in _gpu_flavors().items():
        product = flavor["spec"]["nodeLabels"][GPU_PRODUCT_LABEL]
        assert product in by_product, f"flavor {name}: no RayJobSpec GPU type selects {product}"
        spec = RayJobSpec(
            entrypoint="python train_xgboost.py",
            image="nuro-ml-platform:0.1.0",
            queue_name=local_queue["metadata"]["name"],
            workers=[WorkerGroup(name="gpu", replicas=2, gpus=1, gpu_type=by_product[product])],
        )
        manifest = spec.to_manifest(name=f"train-{name}", namespace=local_queue["metadata"]["namespace"])
        assert manifest["metadata"]["labels"][KUEUE_QUEUE_LABEL] == local_queue["metadata"]["name"]
        pod = manifest["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]
        # Kueue can only place the pods on this flavor if their selector does not contradict it.
        assert pod["nodeSelector"].items() >= flavor["spec"]["nodeLabels"].items()
        for toleration in flavor["spec"].get("tolerations", []):
            assert toleration in pod["tolerations"]


def test_the_kueue_backend_reports_the_quota_as_pools() -> None:
    queues = of_kind("ClusterQueue")
    pools = {p.pool: p for p in queue_pools(queues, of_kind("ResourceFlavor"), KueueBackendConfig())}
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
        assert pools[name].gpu_type == flavor["spec"]["nodeLabels"][GPU_PRODUCT_LABEL]


def test_kuberay_operator_watches_the_team_namespaces() -> None:
    values = yaml.safe_load((HELM_DIR / "kuberay-operator" / "values.yaml").read_text())
    assert sorted(values["watchNamespace"]) == sorted(n["metadata"]["name"] for n in of_kind("Namespace"))


def test_readme_states_the_gpus_each_flavor_needs() -> None:
    from tests.unit.deploy.deploy_files import REPO

    readme = (REPO / "deploy" / "README.md").read_text()
    pools = queue_pools(of_kind("ClusterQueue"), of_kind("ResourceFlavor"), KueueBackendConfig())
    stated = ", ".join(f"{p.pool}: {p.total_gpus}" for p in pools if p.pool in _gpu_flavors())
    assert f"({stated} as written)" in readme
