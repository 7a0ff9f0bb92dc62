"""The shipped CRDs: unmodified upstream copies, loadable as package data, rules all understood."""

from __future__ import annotations

import hashlib
import re
from importlib import resources

import pytest
from nuro_ml.exceptions import NuroMLException
from nuro_ml.kube.cel import compile_rule
from nuro_ml.kube.crds import crd_files, crd_version, load_crd, rayjob_crd

CRD_DIR = resources.files("nuro_ml").joinpath("data", "crds")


def test_files_match_the_digests_in_source_md():
    table = dict(
        re.findall(
            r"^\| (\S+\.yaml) \| \d+ \| ([0-9a-f]{64}) \|$", CRD_DIR.joinpath("SOURCE.md").read_text(), re.M
        )
    )
    assert sorted(table) == crd_files()
    for name, digest in table.items():
        assert hashlib.sha256(CRD_DIR.joinpath(name).read_bytes()).hexdigest() == digest, name


def test_served_versions():
    rayjob = rayjob_crd()
    assert (rayjob.kind, rayjob.namespaced, rayjob.status_subresource) == ("RayJob", True, True)
    queue = crd_version("kueue.x-k8s.io", "v1beta1", "clusterqueues")
    assert (queue.kind, queue.namespaced) == ("ClusterQueue", False)
    with pytest.raises(NuroMLException, match=r"served: v1, v1alpha1"):
        crd_version("ray.io", "v2", "rayjobs")
    with pytest.raises(NuroMLException, match=r"no CRD for rayservices\.ray\.io"):
        load_crd("ray.io", "rayservices")


def _rules(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "x-kubernetes-validations":
                yield from (rule["rule"] for rule in value)
            yield from _rules(value)
    elif isinstance(node, list):
        for item in node:
            yield from _rules(item)


@pytest.mark.parametrize(
    "name",
    [
        "ray.io_rayjobs.yaml",
        "kueue.x-k8s.io_clusterqueues.yaml",
        "kueue.x-k8s.io_resourceflavors.yaml",
        "kueue.x-k8s.io_localqueues.yaml",
        "kueue.x-k8s.io_workloads.yaml",
    ],
)
def test_every_cel_rule_in_the_shipped_crds_is_supported(name):
    group, plural = name[: -len(".yaml")].split("_")
    rules = set(_rules(load_crd(group, plural)))
    for rule in rules:
        compile_rule(rule)  # raises CelError on anything outside the supported subset
