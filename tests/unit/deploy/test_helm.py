"""deploy/helm values: parse, hold no secrets, and agree with the image, Compose and the code."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.unit.deploy.deploy_files import (
    HELM_DIR,
    REPO,
    environment,
    is_read_by_code,
    load_compose,
    locked_version,
    pyproject,
)

AIRFLOW_VALUES = yaml.safe_load((HELM_DIR / "airflow" / "values.yaml").read_text())
KUBERAY_VALUES = yaml.safe_load((HELM_DIR / "kuberay-operator" / "values.yaml").read_text())
#: Chart values that would put a credential into the values file itself.
LITERAL_SECRET_KEYS = ("fernetKey", "apiSecretKey", "jwtSecret", "webserverSecretKey")
LITERAL_DATA_KEYS = ("metadataConnection", "resultBackendConnection", "brokerUrl")


def secret_names() -> set[str]:
    names = {v for k, v in AIRFLOW_VALUES.items() if k.endswith("SecretName") and v}
    names |= {v for k, v in AIRFLOW_VALUES["data"].items() if k.endswith("SecretName") and v}
    names |= {item["secretName"] for item in AIRFLOW_VALUES.get("secret") or []}
    return names


def test_image_and_versions_match_the_build() -> None:
    assert AIRFLOW_VALUES["airflowVersion"] == locked_version("apache-airflow")
    image = AIRFLOW_VALUES["images"]["airflow"]
    assert image["tag"] == pyproject()["project"]["version"]
    compose_image = load_compose()["services"]["airflow-scheduler"]["image"]
    assert compose_image == f"{image['repository']}:{image['tag']}"


def test_executor_and_components_match_compose(airflow_answers: Any) -> None:
    compose_env = environment(load_compose()["services"]["airflow-scheduler"])
    assert AIRFLOW_VALUES["executor"] == compose_env["AIRFLOW__CORE__EXECUTOR"]
    assert AIRFLOW_VALUES["triggerer"]["enabled"] is True
    assert AIRFLOW_VALUES["dagProcessor"]["enabled"] is True
    assert AIRFLOW_VALUES["config"]["operators"]["default_deferrable"] == "True"
    for section, options in AIRFLOW_VALUES["config"].items():
        for key in options:
            assert airflow_answers.option_default(section, key) != "<missing>", f"[{section}] {key}"


def test_credentials_come_from_kubernetes_secrets() -> None:
    for key in LITERAL_SECRET_KEYS:
        assert AIRFLOW_VALUES.get(key) is None, f"{key} would put a secret in the values file"
    for key in LITERAL_DATA_KEYS:
        assert AIRFLOW_VALUES["data"].get(key) is None, f"data.{key} would put a secret in the values file"
    for key in ("metadataSecretName", "resultBackendSecretName", "brokerUrlSecretName"):
        assert AIRFLOW_VALUES["data"][key]
    for key in ("fernetKeySecretName", "apiSecretKeySecretName", "jwtSecretName"):
        assert AIRFLOW_VALUES[key]
    assert AIRFLOW_VALUES["postgresql"]["enabled"] is False
    assert AIRFLOW_VALUES["redis"]["enabled"] is False
    text = (HELM_DIR / "airflow" / "values.yaml").read_text()
    assert not re.search(r"://[^/@\s:]+:[^/@\s]+@", text), "a URL with a password is in the values"


def test_secrets_are_documented() -> None:
    readme = (REPO / "deploy" / "README.md").read_text()
    for name in sorted(secret_names()):
        assert f"`{name}`" in readme, f"deploy/README.md does not say how to create Secret {name}"


def test_environment_names_are_ones_the_code_reads() -> None:
    from nuro_ml.hooks.kuberay import KubeRayHook
    from nuro_ml.hooks.ray import RayHook

    names = [item["name"] for item in AIRFLOW_VALUES.get("env") or []]
    names += [item["envName"] for item in AIRFLOW_VALUES.get("secret") or []]
    assert len(names) == len(set(names)), "a variable is set twice"
    from nuro_ml.metrics.endpoint import METRICS_CONN_ID

    known_connections = {KubeRayHook.default_conn_name, RayHook.default_conn_name, METRICS_CONN_ID}
    for name in names:
        if name.startswith("AIRFLOW_CONN_"):
            assert name.removeprefix("AIRFLOW_CONN_").lower() in known_connections, name
        else:
            assert name.startswith("NURO_ML_") and is_read_by_code(name), name
    for item in AIRFLOW_VALUES.get("secret") or []:
        assert set(item) == {"envName", "secretName", "secretKey"}


def test_data_directory_is_a_shared_volume_at_the_image_path() -> None:
    env = {item["name"]: item["value"] for item in AIRFLOW_VALUES["env"]}
    volumes = {v["name"] for v in AIRFLOW_VALUES["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in AIRFLOW_VALUES["volumeMounts"]}
    assert mounts[env["NURO_ML_DATA_DIR"]] in volumes
    compose_env = environment(load_compose()["services"]["airflow-worker"])
    assert env["NURO_ML_DATA_DIR"] == compose_env["NURO_ML_DATA_DIR"]
    assert env["NURO_ML_FEATURE_REPO"] == compose_env["NURO_ML_FEATURE_REPO"]


def test_kuberay_operator_matches_the_shipped_crds() -> None:
    source = (REPO / "providers" / "nuro_ml" / "data" / "crds" / "SOURCE.md").read_text()
    kuberay = source[source.index("## KubeRay") : source.index("## Kueue")]
    described = re.search(r"`git describe`: v(\d+\.\d+)\.", kuberay)
    assert described is not None
    assert re.fullmatch(rf"v{re.escape(described.group(1))}\.\d+", KUBERAY_VALUES["image"]["tag"])
    assert KUBERAY_VALUES["batchScheduler"] == {"enabled": False, "name": ""}
    gates = [gate["name"] for gate in KUBERAY_VALUES["featureGates"]]
    assert len(gates) == len(set(gates))


@pytest.mark.parametrize("path", sorted(HELM_DIR.rglob("*.yaml")), ids=lambda p: str(p.relative_to(HELM_DIR)))
def test_every_helm_file_parses(path: Any) -> None:
    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    assert documents and all(isinstance(doc, dict) for doc in documents)
