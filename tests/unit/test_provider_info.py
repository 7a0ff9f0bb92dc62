"""The provider declaration Airflow reads matches provider.yaml and names only real code."""

from __future__ import annotations

import importlib
import importlib.metadata

import pytest
from nuro_ml import provider_yaml
from nuro_ml.get_provider_info import get_provider_info

INFO = get_provider_info()


def _modules() -> list[str]:
    return [
        m
        for kind in ("operators", "sensors", "hooks", "triggers")
        for e in INFO[kind]
        for m in e["python-modules"]
    ]


def test_generated_module_is_up_to_date() -> None:
    assert provider_yaml.GENERATED.read_text() == provider_yaml.render(), (
        "get_provider_info.py is stale: run `python -m nuro_ml.provider_yaml`"
    )


def test_entry_point_is_registered() -> None:
    eps = importlib.metadata.entry_points(group="apache_airflow_provider")
    ours = [ep for ep in eps if ep.value == "nuro_ml.get_provider_info:get_provider_info"]
    assert len(ours) == 1
    assert ours[0].load()()["package-name"] == "nuro-ml-platform"


@pytest.mark.parametrize("module", _modules())
def test_declared_modules_import(module: str) -> None:
    importlib.import_module(module)


@pytest.mark.parametrize("conn", INFO["connection-types"], ids=lambda c: c["connection-type"])
def test_connection_types_point_at_hooks_with_that_type(conn: dict[str, object]) -> None:
    module_name, _, class_name = str(conn["hook-class-name"]).rpartition(".")
    hook = getattr(importlib.import_module(module_name), class_name)
    assert hook.conn_type == conn["connection-type"]
    assert hook.default_conn_name


@pytest.mark.parametrize("link", INFO["extra-links"])
def test_extra_links_exist(link: str) -> None:
    module_name, _, class_name = link.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    assert cls.name


def test_airflow_sees_the_provider() -> None:
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert "nuro-ml-platform" in manager.providers
    for conn_type in ("terraform", "ray", "feast", "slurm"):
        assert conn_type in manager.hooks
