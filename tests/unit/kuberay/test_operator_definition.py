"""KubeRayJobOperator as a DAG author sees it: templating, defaults, extra link."""

from __future__ import annotations

from nuro_ml.kube.rayjob import RayJobSpec
from nuro_ml.links.kuberay import KubeRayDashboardLink, dashboard_url
from nuro_ml.operators.kuberay import KubeRayJobOperator


def test_spec_fields_and_name_are_templated():
    op = KubeRayJobOperator(
        task_id="train",
        rayjob=RayJobSpec(entrypoint="python train.py --date {{ ds }}", job_metadata={"run": "{{ run_id }}"}),
        name="train-{{ ds_nodash }}",
    )
    op.render_template_fields({"ds": "2026-11-01", "ds_nodash": "20261101", "run_id": "manual__1"})
    assert isinstance(op.rayjob, RayJobSpec)
    assert op.rayjob.entrypoint == "python train.py --date 2026-11-01"
    assert op.rayjob.job_metadata == {"run": "manual__1"}
    assert op.name == "train-20261101"


def test_defaults_and_extra_link():
    op = KubeRayJobOperator(task_id="train", rayjob=RayJobSpec(entrypoint="python t.py"))
    assert op.deferrable is True
    assert op.kubernetes_conn_id == "kubernetes_default"
    assert "kubernetes_conn_id" in op.template_fields
    assert [type(link) for link in op.operator_extra_links] == [KubeRayDashboardLink]
    assert KubeRayDashboardLink().name == "Ray Dashboard"


def test_dashboard_url_forms():
    common = {"name": "j", "namespace": "ml", "cluster": "j-abcde"}
    assert dashboard_url(template=None, dashboard="j-abcde-head-svc.ml.svc.cluster.local:8265", **common) == (
        "http://j-abcde-head-svc.ml.svc.cluster.local:8265"
    )
    template = "https://ray.example.com/{namespace}/{cluster}/"
    assert dashboard_url(template=template, dashboard="x", **common) == "https://ray.example.com/ml/j-abcde/"
