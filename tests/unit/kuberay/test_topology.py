"""Kueue topology-aware scheduling requests on RayJob pod sets: written as Kueue reads them,
refused where Kueue's RayJob webhook refuses them."""

from __future__ import annotations

import pytest
from nuro_ml.exceptions import RayJobSpecInvalidError
from nuro_ml.kube.manifest import validate_rayjob_manifest
from nuro_ml.kube.rayjob import RayJobSpec, WorkerGroup
from nuro_ml.kube.topology import (
    PODSET_GROUP_NAME,
    PODSET_PREFERRED_TOPOLOGY,
    PODSET_REQUIRED_TOPOLOGY,
    PODSET_SLICE_REQUIRED_TOPOLOGY,
    PODSET_SLICE_SIZE,
    PODSET_UNCONSTRAINED_TOPOLOGY,
    TopologyRequest,
    rayjob_pod_sets,
    set_topology_request,
)

WORKER_ANNOTATIONS = "spec.rayClusterSpec.workerGroupSpecs[0].template.metadata.annotations"


def _manifest(*, queue: str | None = "team-a") -> dict:
    spec = RayJobSpec(
        entrypoint="python train.py", queue_name=queue, workers=[WorkerGroup(name="gpu", replicas=4, gpus=2)]
    )
    return spec.to_manifest(name="train-1", namespace="ml", validate=False)


def _with_worker_annotations(annotations: dict[str, str], *, queue: str | None = "team-a") -> dict:
    manifest = _manifest(queue=queue)
    manifest["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["metadata"] = {
        "annotations": annotations
    }
    return manifest


def test_pod_sets_are_the_head_and_each_worker_group() -> None:
    pod_sets = list(rayjob_pod_sets(_manifest()))
    assert [(p.name, p.count, p.path) for p in pod_sets] == [
        ("head", 1, "spec.rayClusterSpec.headGroupSpec.template"),
        ("gpu", 4, "spec.rayClusterSpec.workerGroupSpecs[0].template"),
    ]


@pytest.mark.parametrize(
    "request_",
    [
        TopologyRequest(required="kubernetes.io/hostname"),
        TopologyRequest(preferred="cloud.example.com/topology-rack"),
        TopologyRequest(unconstrained=True),
        TopologyRequest(slice_required="kubernetes.io/hostname", slice_size=2),
        TopologyRequest(
            required="cloud.example.com/topology-block", slice_required="kubernetes.io/hostname", slice_size=4
        ),
    ],
)
def test_requests_kueue_accepts_pass_the_crd_and_kueue_checks(request_: TopologyRequest) -> None:
    manifest = _manifest()
    template = manifest["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]
    set_topology_request(template, request_)
    normalized = validate_rayjob_manifest(manifest)
    stored = normalized["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["metadata"][
        "annotations"
    ]
    assert stored == request_.annotations()


def test_setting_a_request_replaces_the_previous_one() -> None:
    template: dict = {"metadata": {"annotations": {PODSET_PREFERRED_TOPOLOGY: "rack", "team": "a"}}}
    set_topology_request(template, TopologyRequest(required="kubernetes.io/hostname"))
    assert template["metadata"]["annotations"] == {
        "team": "a",
        PODSET_REQUIRED_TOPOLOGY: "kubernetes.io/hostname",
    }


@pytest.mark.parametrize(
    ("annotations", "path", "message"),
    [
        (
            {PODSET_REQUIRED_TOPOLOGY: "kubernetes.io/hostname", PODSET_PREFERRED_TOPOLOGY: "rack"},
            WORKER_ANNOTATIONS,
            "must not contain more than one topology annotation",
        ),
        (
            {PODSET_REQUIRED_TOPOLOGY: "not a label"},
            f"{WORKER_ANNOTATIONS}[{PODSET_REQUIRED_TOPOLOGY}]",
            "a topology level is a node label",
        ),
        (
            {PODSET_UNCONSTRAINED_TOPOLOGY: "yes"},
            f"{WORKER_ANNOTATIONS}[{PODSET_UNCONSTRAINED_TOPOLOGY}]",
            "must be a boolean",
        ),
        (
            {PODSET_SLICE_REQUIRED_TOPOLOGY: "kubernetes.io/hostname"},
            f"{WORKER_ANNOTATIONS}[{PODSET_SLICE_SIZE}]",
            "slice size is required if slice topology is requested",
        ),
        (
            {PODSET_SLICE_SIZE: "2"},
            f"{WORKER_ANNOTATIONS}[{PODSET_SLICE_SIZE}]",
            "cannot be set when 'kueue.x-k8s.io/podset-slice-required-topology' is not present",
        ),
        (
            {PODSET_SLICE_REQUIRED_TOPOLOGY: "kubernetes.io/hostname", PODSET_SLICE_SIZE: "two"},
            f"{WORKER_ANNOTATIONS}[{PODSET_SLICE_SIZE}]",
            "must be a numeric value",
        ),
        (
            {PODSET_SLICE_REQUIRED_TOPOLOGY: "kubernetes.io/hostname", PODSET_SLICE_SIZE: "0"},
            f"{WORKER_ANNOTATIONS}[{PODSET_SLICE_SIZE}]",
            "must be greater than or equal to 1",
        ),
        (
            {PODSET_SLICE_REQUIRED_TOPOLOGY: "kubernetes.io/hostname", PODSET_SLICE_SIZE: "5"},
            f"{WORKER_ANNOTATIONS}[{PODSET_SLICE_SIZE}]",
            "must not be greater than pod set count 4",
        ),
        (
            {PODSET_GROUP_NAME: "7"},
            f"{WORKER_ANNOTATIONS}[{PODSET_GROUP_NAME}]",
            "must not be a number",
        ),
    ],
)
def test_requests_kueue_refuses_are_reported_with_their_annotation(
    annotations: dict[str, str], path: str, message: str
) -> None:
    with pytest.raises(RayJobSpecInvalidError) as err:
        validate_rayjob_manifest(_with_worker_annotations(annotations))
    assert f"{path}: " in str(err.value) and message in str(err.value)


def test_topology_annotations_are_kueues_business_only_under_a_queue() -> None:
    # Without the queue-name label Kueue does not manage the RayJob and ignores the annotations.
    manifest = _with_worker_annotations({PODSET_SLICE_SIZE: "9"}, queue=None)
    assert validate_rayjob_manifest(manifest)["metadata"]["name"] == "train-1"
