"""Stable OpenLineage namespaces and names for what the platform reads and writes.

Names follow the OpenLineage naming conventions where they define one (local files:
namespace ``file``, name the absolute path; object stores: ``scheme://bucket`` and the key), so
datasets written by one operator and read by another, here or in another tool, are the same node
of the lineage graph.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit

FILE_NAMESPACE = "file"
TERRAFORM_NAMESPACE = "terraform"


@dataclass(frozen=True)
class DatasetId:
    """Namespace and name of one dataset."""

    namespace: str
    name: str


def path_dataset(path: str | os.PathLike[str]) -> DatasetId:
    """The dataset of a file or folder given as a local path, a ``file://`` URI or an object-store URI."""
    text = os.fspath(path)
    parsed = urlsplit(text)
    if parsed.scheme in ("", "file") or len(parsed.scheme) == 1:  # one letter: a Windows drive
        local = parsed.path if parsed.scheme == "file" else text
        return DatasetId(FILE_NAMESPACE, os.path.normpath(os.path.abspath(local)))
    return DatasetId(f"{parsed.scheme}://{parsed.netloc}", parsed.path.lstrip("/").rstrip("/") or "/")


def table_dataset(output_path: str | os.PathLike[str], table: str) -> DatasetId:
    """One Parquet table of the ETL output (all its date/vehicle partitions)."""
    root = path_dataset(output_path)
    separator = "" if root.name.endswith("/") else "/"
    return DatasetId(root.namespace, f"{root.name}{separator}{table}")


def feature_view_dataset(project: str, view: str) -> DatasetId:
    """A Feast feature view, as the training job reads it (point-in-time, offline)."""
    return DatasetId(f"feast://{project}", view)


def online_store_dataset(online_target: str, project: str, view: str) -> DatasetId:
    """A feature view's table in the online store.

    ``online_target`` is :meth:`nuro_ml.features.config.FeastSettings.online_target`, which ends in
    ``/<project>`` and names the store without credentials (``redis://host:port/db/<project>``,
    ``sqlite:///path/online_store.db/<project>``).
    """
    store = online_target.removesuffix(f"/{project}")
    return DatasetId(store, f"{project}.{view}")


def terraform_workspace_dataset(working_dir: str | os.PathLike[str], workspace: str) -> DatasetId:
    """The state of one Terraform workspace of one root module."""
    module = path_dataset(working_dir)
    where = module.name if module.namespace == FILE_NAMESPACE else f"{module.namespace}/{module.name}"
    return DatasetId(TERRAFORM_NAMESPACE, f"{where}#{workspace}")
