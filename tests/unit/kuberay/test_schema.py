"""Structural-schema validation with the Kubernetes extensions, and the CEL subset behind it."""

from __future__ import annotations

import pytest
from nuro_ml.kube.cel import CelError, compile_rule, evaluate
from nuro_ml.kube.crds import crd_version, rayjob_crd
from nuro_ml.kube.schema import StructuralSchema, field_path, schema_for


@pytest.mark.parametrize(
    ("rule", "value", "expected"),
    [
        ("has(self.a) || has(self.b)", {"b": 1}, True),
        ("!(has(self.a) && has(self.b))", {"a": 1, "b": 2}, False),
        ("self in ['x', 'y']", "y", True),
        (
            "self.all(t, !has(t.key) ? t.operator == 'Exists' : true)",
            [{"operator": "Exists"}, {"key": "k"}],
            True,
        ),
        ("self.all(t, !has(t.key) ? t.operator == 'Exists' : true)", [{"operator": "Equal"}], False),
        (
            "self.flavors.all(f, size(f.resources) == size(self.covered))",
            {"flavors": [{"resources": [1, 2]}], "covered": ["a", "b"]},
            True,
        ),
        ("self.nodeLabels.size() >= 1", {"nodeLabels": {}}, False),
        ("self.name.startsWith('gpu-') && self.n > 2", {"name": "gpu-a", "n": 3}, True),
        # Kueue's Workload: exactly one of two fields (a list literal filtered, then counted).
        ("[has(self.universal),has(self.individual)].filter(x,x==true).size() == 1", {"universal": 1}, True),
        ("[has(self.universal),has(self.individual)].filter(x,x==true).size() == 1", {}, False),
        ("self.filter(p, p.count > 1).all(p, has(p.slice))", [{"count": 1}, {"count": 2, "slice": 1}], True),
    ],
)
def test_cel_subset(rule, value, expected):
    assert evaluate(rule, value) is expected


def test_cel_transition_rule_and_unsupported_syntax():
    assert evaluate("self == oldSelf", "a", "a") is True
    assert evaluate("self == oldSelf", "a", "b") is False
    with pytest.raises(CelError, match="unsupported CEL function"):
        compile_rule("quantity(self) > 1")
    with pytest.raises(CelError, match="no such key"):
        evaluate("self.missing == 1", {})


def test_field_path():
    assert field_path(["spec", "workerGroupSpecs", 0, "replicas"]) == "spec.workerGroupSpecs[0].replicas"
    assert field_path([]) == "<root>"


@pytest.fixture(scope="module")
def rayjob() -> StructuralSchema:
    return schema_for(rayjob_crd())


def _job(**spec) -> dict:
    container = {"name": "ray-head", "image": "rayproject/ray"}
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": "job", "anything": "ObjectMeta is not the CRD schema's business"},
        "spec": {
            "entrypoint": "python x.py",
            "rayClusterSpec": {"headGroupSpec": {"template": {"spec": {"containers": [container]}}}},
            **spec,
        },
    }


def _paths(schema: StructuralSchema, obj: dict, **kwargs) -> dict[str, str]:
    return {v.path: v.reason for v in schema.validate(schema.normalize(obj), **kwargs)}


def test_valid_job_gets_crd_defaults(rayjob: StructuralSchema):
    normalized = rayjob.normalize(_job())
    assert rayjob.validate(normalized) == []
    assert normalized["spec"]["submissionMode"] == "K8sJobMode"
    assert normalized["spec"]["backoffLimit"] == 0


def test_type_required_unknown_int_or_string_and_int32(rayjob: StructuralSchema):
    worker = {
        "groupName": "w",
        "replicas": "2",
        "minReplicas": 0,
        "maxReplicas": 3_000_000_000,
        "template": {"spec": {"containers": [{"image": "x", "resources": {"limits": {"cpu": 0.5}}}]}},
    }
    job = _job(activeDeadlineSeconds=True, submitterConfig={"backoffLimitt": 1})
    job["spec"]["rayClusterSpec"]["workerGroupSpecs"] = [worker]
    base = "spec.rayClusterSpec.workerGroupSpecs[0]"
    assert _paths(rayjob, job) == {
        "spec.activeDeadlineSeconds": "FieldValueTypeInvalid",
        "spec.submitterConfig.backoffLimitt": "FieldValueUnknown",
        f"{base}.replicas": "FieldValueTypeInvalid",
        f"{base}.maxReplicas": "FieldValueInvalid",
        f"{base}.template.spec.containers[0].name": "FieldValueRequired",
        f"{base}.template.spec.containers[0].resources.limits.cpu": "FieldValueTypeInvalid",
    }


def test_list_map_keys_must_be_unique(rayjob: StructuralSchema):
    job = _job()
    container = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    container["ports"] = [{"containerPort": 8265, "name": "a"}, {"containerPort": 8265, "name": "b"}]
    found = rayjob.validate(rayjob.normalize(job))
    assert [(v.path, v.reason) for v in found] == [
        ("spec.rayClusterSpec.headGroupSpec.template.spec.containers[0].ports[1]", "FieldValueDuplicate")
    ]


def test_cel_rules_and_transition_rules(rayjob: StructuralSchema):
    job = _job(
        deletionStrategy={"onSuccess": {"policy": "DeleteCluster"}}, managedBy="ray.io/kuberay-operator"
    )
    found = rayjob.validate(rayjob.normalize(job))
    assert [v.path for v in found] == ["spec.deletionStrategy"]
    assert "BOTH onSuccess and onFailure" in found[0].message

    old = rayjob.normalize(_job(managedBy="ray.io/kuberay-operator"))
    new = rayjob.normalize(_job(managedBy="kueue.x-k8s.io/multikueue"))
    assert rayjob.validate(new) == []  # a create has no old object: transition rules do not apply
    assert [v.message for v in rayjob.validate(new, old=old)] == [
        "Invalid value: the managedBy field is immutable"
    ]


def test_prune_drops_undeclared_fields_but_keeps_metadata(rayjob: StructuralSchema):
    job = _job(entrypont="typo")
    pruned, removed = rayjob.prune(job)
    assert removed == ["spec.entrypont"]
    assert "entrypont" not in pruned["spec"]
    assert pruned["metadata"]["anything"]
    assert rayjob.validate(rayjob.normalize(job), strict=False) == []


def test_nulls_are_dropped_and_cluster_queue_rules_checked():
    queue = schema_for(crd_version("kueue.x-k8s.io", "v1beta1", "clusterqueues"))
    obj = {
        "apiVersion": "kueue.x-k8s.io/v1beta1",
        "kind": "ClusterQueue",
        "metadata": {"name": "q"},
        "spec": {
            "cohort": None,
            "resourceGroups": [
                {
                    "coveredResources": ["cpu", "nvidia.com/gpu"],
                    "flavors": [
                        {
                            "name": "a100",
                            "resources": [{"name": "nvidia.com/gpu", "nominalQuota": 8, "borrowingLimit": 2}],
                        }
                    ],
                }
            ],
        },
    }
    normalized = queue.normalize(obj)
    assert "cohort" not in normalized["spec"]
    messages = {v.path: v.message for v in queue.validate(normalized)}
    assert set(messages) == {"spec", "spec.resourceGroups[0]"}
    assert "borrowingLimit" in messages["spec"] or "cohort" in messages["spec"]
