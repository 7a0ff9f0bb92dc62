"""KubeRay hooks through the cncf-kubernetes connection, and the stand-in's API behaviour."""

from __future__ import annotations

import asyncio
import json

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from nuro_ml.exceptions import KubeRayJobError, RayJobAlreadyExistsError, RayJobSpecInvalidError
from nuro_ml.hooks.kuberay import AsyncKubeRayHook, KubeRayHook
from nuro_ml.kube.rayjob import RayJobSpec, WorkerGroup

from tests.fixtures.kube_api import KubeApiStandIn

pytestmark = pytest.mark.integration


def manifest(name: str = "train-1", **kwargs: object) -> dict:
    spec = RayJobSpec(
        entrypoint="python train.py", workers=[WorkerGroup(name="w", replicas=1, gpus=1)], **kwargs
    )  # type: ignore[arg-type]
    return spec.to_manifest(name=name, namespace="ml")


def test_hook_crud_and_errors(kube_api: KubeApiStandIn, conn_id: str):
    hook = KubeRayHook(conn_id=conn_id)
    assert hook.get_namespace() == "ml"
    created = hook.create_rayjob(manifest=manifest())
    assert created.name == "train-1" and created.uid
    with pytest.raises(RayJobAlreadyExistsError, match="already exists"):
        hook.create_rayjob(manifest=manifest())
    assert hook.get_rayjob(name="missing", namespace="ml") is None

    found = asyncio.run(AsyncKubeRayHook(conn_id=conn_id).get_rayjob(name="train-1", namespace="ml"))
    assert found is not None and found.uid == created.uid
    assert asyncio.run(AsyncKubeRayHook(conn_id=conn_id).get_rayjob(name="missing", namespace="ml")) is None

    assert hook.delete_rayjob(name="train-1", namespace="ml") is True
    hook.wait_rayjob_deleted(name="train-1", namespace="ml", timeout=30, poll_interval=0.02)
    assert hook.delete_rayjob(name="train-1", namespace="ml") is False


def test_async_delete_removes_only_the_incarnation_it_names(kube_api: KubeApiStandIn, conn_id: str):
    created = KubeRayHook(conn_id=conn_id).create_rayjob(manifest=manifest("train-2"))
    hook = AsyncKubeRayHook(conn_id=conn_id)
    # Another RayJob now holds the name (a different uid): nothing of ours to delete, it stays.
    assert asyncio.run(hook.delete_rayjob(name="train-2", namespace="ml", uid="someone-else")) is False
    assert kube_api.rayjob("train-2", "ml") is not None
    assert asyncio.run(hook.delete_rayjob(name="train-2", namespace="ml", uid=created.uid)) is True
    KubeRayHook(conn_id=conn_id).wait_rayjob_deleted(
        name="train-2", namespace="ml", timeout=30, poll_interval=0.02
    )
    assert asyncio.run(hook.delete_rayjob(name="train-2", namespace="ml", uid=created.uid)) is False


def test_server_side_schema_rejection_names_the_field(kube_api: KubeApiStandIn, conn_id: str):
    bad = manifest()
    bad["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] = 3_000_000_000
    with pytest.raises(RayJobSpecInvalidError) as err:
        KubeRayHook(conn_id=conn_id).create_rayjob(manifest=bad)
    assert err.value.violations == [
        "spec.rayClusterSpec.workerGroupSpecs[0].replicas: Invalid value: 3000000000: must fit in int32 "
        "[-2147483648, 2147483647]"
    ]
    assert kube_api.rayjobs() == []


def test_wrong_credentials_are_reported(kube_api: KubeApiStandIn, tmp_path, monkeypatch):
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "bad", token="wrong")
    monkeypatch.setenv(
        "AIRFLOW_CONN_KUBE_BAD",
        json.dumps({"conn_type": "kubernetes", "extra": {"kube_config_path": str(kubeconfig)}}),
    )
    with pytest.raises(KubeRayJobError, match="HTTP 401"):
        KubeRayHook(conn_id="kube_bad").get_rayjob(name="x", namespace="ml")


@pytest.fixture
def custom(kube_api: KubeApiStandIn, tmp_path) -> client.CustomObjectsApi:
    path = kube_api.write_kubeconfig(tmp_path / "kc")
    return client.CustomObjectsApi(config.new_client_from_config(config_file=str(path)))


def test_patch_semantics_and_transition_rules(kube_api: KubeApiStandIn, custom: client.CustomObjectsApi):
    args = ("ray.io", "v1", "ml", "rayjobs", "train-1")
    custom.create_namespaced_custom_object("ray.io", "v1", "ml", "rayjobs", manifest())
    patched = custom.patch_namespaced_custom_object(*args, {"metadata": {"labels": {"stage": "canary"}}})
    assert patched["metadata"]["labels"]["stage"] == "canary"
    patched = custom.patch_namespaced_custom_object(
        *args,
        [{"op": "replace", "path": "/spec/entrypoint", "value": "python b.py"}],
        _content_type="application/json-patch+json",
    )
    assert patched["spec"]["entrypoint"] == "python b.py"
    assert patched["metadata"]["generation"] == 2
    # Status belongs to the controller: a main-resource patch cannot change it.
    kept = custom.patch_namespaced_custom_object(*args, {"status": {"jobDeploymentStatus": "Complete"}})
    assert kept["status"].get("jobDeploymentStatus") != "Complete"
    # Defaulting: the CRD defaults submissionMode and the worker group's numOfHosts.
    assert kept["spec"]["submissionMode"] == "K8sJobMode"
    assert kept["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["numOfHosts"] == 1


def test_immutable_field_and_cel_rules(kube_api: KubeApiStandIn, custom: client.CustomObjectsApi):
    body = manifest()
    body["spec"]["managedBy"] = "ray.io/kuberay-operator"
    custom.create_namespaced_custom_object("ray.io", "v1", "ml", "rayjobs", body)
    with pytest.raises(ApiException) as err:
        custom.patch_namespaced_custom_object(
            "ray.io", "v1", "ml", "rayjobs", "train-1", {"spec": {"managedBy": "kueue.x-k8s.io/multikueue"}}
        )
    assert err.value.status == 422
    status = json.loads(err.value.body)
    assert status["reason"] == "Invalid"
    assert status["details"]["causes"][0]["field"] == "spec.managedBy"
    assert "immutable" in status["details"]["causes"][0]["message"]

    body = manifest("train-2")
    body["spec"]["deletionStrategy"] = {"onSuccess": {"policy": "DeleteCluster"}}
    with pytest.raises(ApiException) as err:
        custom.create_namespaced_custom_object("ray.io", "v1", "ml", "rayjobs", body)
    assert json.loads(err.value.body)["details"]["causes"][0]["field"] == "spec.deletionStrategy"


def test_unknown_fields_pruned_with_warning_or_rejected_when_strict(kube_api: KubeApiStandIn, custom):
    body = manifest()
    body["spec"]["entrypont"] = "typo"
    with pytest.raises(ApiException) as err:
        custom.create_namespaced_custom_object(
            "ray.io", "v1", "ml", "rayjobs", body, field_validation="Strict"
        )
    assert err.value.status == 400 and "spec.entrypont" in err.value.body
    created = custom.create_namespaced_custom_object("ray.io", "v1", "ml", "rayjobs", body)
    assert "entrypont" not in created["spec"]


def test_strategic_merge_patch_is_refused_for_custom_resources(
    kube_api: KubeApiStandIn, conn_id: str, tmp_path
):
    KubeRayHook(conn_id=conn_id).create_rayjob(manifest=manifest())
    path = kube_api.write_kubeconfig(tmp_path / "kc")
    api = config.new_client_from_config(config_file=str(path))
    with pytest.raises(ApiException) as err:
        api.call_api(
            "/apis/ray.io/v1/namespaces/ml/rayjobs/train-1",
            "PATCH",
            header_params={"Content-Type": "application/strategic-merge-patch+json"},
            body={"spec": {"entrypoint": "x"}},
            auth_settings=["BearerToken"],
            _preload_content=False,
        )
    assert err.value.status == 415


def test_discovery_and_selectors(kube_api: KubeApiStandIn, tmp_path):
    path = kube_api.write_kubeconfig(tmp_path / "kc")
    api_client = config.new_client_from_config(config_file=str(path))
    groups = {g.name for g in client.ApisApi(api_client).get_api_versions().groups}
    assert {"ray.io", "kueue.x-k8s.io"} <= groups
    kube_api.add_node("n1", gpus=1, labels={"zone": "a", "gpu": "yes"})
    kube_api.add_node("n2", gpus=0, labels={"zone": "b"})
    core = client.CoreV1Api(api_client)
    assert [n.metadata.name for n in core.list_node(label_selector="zone in (a,c),gpu").items] == ["n1"]
    assert [n.metadata.name for n in core.list_node(label_selector="!gpu").items] == ["n2"]
    kube_api.add_pod("p1", node="n1", gpus=1, phase="Running")
    kube_api.add_pod("p2", node="n1", phase="Succeeded")
    names = [
        p.metadata.name
        for p in core.list_pod_for_all_namespaces(field_selector="status.phase!=Succeeded").items
    ]
    assert names == ["p1"]
