"""The upstream CRDs shipped as package data (``nuro_ml/data/crds``), loaded once per process."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml

from nuro_ml.exceptions import NuroMLException

try:  # the C loader parses the 1.4 MB RayJob CRD about 10x faster
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - libyaml is part of the PyYAML wheels we install
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

RAY_GROUP = "ray.io"
RAY_VERSION = "v1"
RAYJOB_PLURAL = "rayjobs"
RAYJOB_KIND = "RayJob"

KUEUE_GROUP = "kueue.x-k8s.io"
KUEUE_VERSION = "v1beta1"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
KUEUE_PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"


@dataclass(frozen=True)
class CrdVersion:
    """One served version of a CRD: where it lives in the API and its structural schema."""

    group: str
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    schema: dict[str, Any]
    status_subresource: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


def crd_files() -> list[str]:
    """Names of the CRD manifests shipped with the package."""
    root = resources.files("nuro_ml").joinpath("data", "crds")
    return sorted(entry.name for entry in root.iterdir() if entry.name.endswith(".yaml"))


@cache
def load_crd(group: str, plural: str) -> dict[str, Any]:
    """The CustomResourceDefinition for ``<plural>.<group>``, parsed from the shipped file."""
    name = f"{group}_{plural}.yaml"
    resource = resources.files("nuro_ml").joinpath("data", "crds", name)
    if not resource.is_file():
        raise NuroMLException(
            f"no CRD for {plural}.{group} in nuro_ml/data/crds (shipped: {', '.join(crd_files())})"
        )
    document: dict[str, Any] = yaml.load(resource.read_text(encoding="utf-8"), Loader=_Loader)
    return document


@cache
def crd_version(group: str, version: str, plural: str) -> CrdVersion:
    """The served ``version`` of ``<plural>.<group>``; errors name the versions that exist."""
    crd = load_crd(group, plural)
    names = crd["spec"]["names"]
    served = [v for v in crd["spec"]["versions"] if v.get("served")]
    for entry in served:
        if entry["name"] == version:
            return CrdVersion(
                group=group,
                version=version,
                kind=names["kind"],
                plural=names["plural"],
                singular=names.get("singular", names["kind"].lower()),
                namespaced=crd["spec"]["scope"] == "Namespaced",
                schema=entry["schema"]["openAPIV3Schema"],
                status_subresource="status" in (entry.get("subresources") or {}),
            )
    raise NuroMLException(
        f"{plural}.{group} has no served version {version!r} (served: {', '.join(v['name'] for v in served)})"
    )


def rayjob_crd() -> CrdVersion:
    """``ray.io/v1`` RayJob."""
    return crd_version(RAY_GROUP, RAY_VERSION, RAYJOB_PLURAL)
