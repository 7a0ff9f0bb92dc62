"""Lineage of training jobs (Ray, KubeRay, Slurm): features in, model artifact out.

A training job is opaque to Airflow; what it read and wrote comes from the result it reports
(the ``NURO_ML_RESULT`` line of a Ray job: ``feature_service`` or ``training_data``,
``artifact_uri``, ``metrics.rows_used``) and from the ``inlets``/``outlets`` the task declares.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nuro_ml.lineage import facets
from nuro_ml.lineage.feast import batch_source_dataset, feature_view_inputs
from nuro_ml.lineage.naming import FILE_NAMESPACE, DatasetId, path_dataset
from nuro_ml.lineage.results import kept_result

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from feast import FeatureStore
    from openlineage.client.event_v2 import InputDataset, OutputDataset


@dataclass(frozen=True)
class FeatureRepo:
    """The Feast repository a training job read, and its project."""

    store: FeatureStore
    project: str
    repo_path: Path


def training_feature_repo() -> FeatureRepo:
    """The repository as the training job itself finds it: ``NURO_ML_FEAST_*`` and the repo folder.

    No Airflow connection is read: lineage runs in a process forked from the task, which cannot
    ask the supervisor for connections.
    """
    from nuro_ml import settings
    from nuro_ml.features.config import FeastSettings

    resolved = FeastSettings.from_env().resolve(settings.feature_repo_dir())
    return FeatureRepo(resolved.feature_store(), resolved.project, resolved.repo_path)


def _feature_service_inputs(repo: FeatureRepo, service_name: str, rows: int | None) -> list[InputDataset]:
    store = repo.store
    service = store.get_feature_service(service_name)
    views = [projection.name for projection in service.feature_view_projections]
    inputs = feature_view_inputs(store, repo.project, views, rows=rows)
    # Labels and entity rows come from the batch sources of the service's views.
    sources: dict[DatasetId, None] = {}
    for view in views:
        source = batch_source_dataset(store.get_feature_view(view), repo.repo_path)
        if source is not None:
            sources.setdefault(source)
    inputs += [facets.input_dataset(source) for source in sources]
    return inputs


def _model_output(artifact_uri: str) -> OutputDataset:
    model = path_dataset(artifact_uri)
    size = None
    if model.namespace == FILE_NAMESPACE and os.path.isfile(model.name):
        size = os.path.getsize(model.name)
    return facets.output_dataset(
        model,
        {"lifecycleStateChange": facets.lifecycle("OVERWRITE")},
        {"outputStatistics": facets.output_statistics(size=size, files=1)},
    )


def training_lineage(
    *,
    result: Any,
    engine: str,
    job_id: str | None,
    inlets: Sequence[Any] = (),
    outlets: Sequence[Any] = (),
    feature_repo: Callable[[], FeatureRepo] = training_feature_repo,
) -> OperatorLineage:
    """Lineage of one finished training job that ran on ``engine`` as ``job_id``."""
    from airflow.providers.openlineage.extractors import OperatorLineage

    reported = result if isinstance(result, dict) else {}
    metrics = reported.get("metrics")
    rows = metrics.get("rows_used") if isinstance(metrics, dict) else None
    inputs = [facets.input_dataset(d) for d in facets.declared_datasets(inlets)]
    if reported.get("feature_service"):
        inputs += _feature_service_inputs(feature_repo(), str(reported["feature_service"]), rows)
    if reported.get("training_data"):
        stats = {"inputStatistics": facets.input_statistics(rows=rows)} if rows is not None else {}
        inputs.append(facets.input_dataset(path_dataset(str(reported["training_data"])), None, stats))
    outputs = [facets.output_dataset(d) for d in facets.declared_datasets(outlets)]
    if reported.get("artifact_uri"):
        outputs.append(_model_output(str(reported["artifact_uri"])))
    run_facets = facets.external_job(job_id, engine) if job_id else {}
    return OperatorLineage(inputs=_unique(inputs), outputs=_unique(outputs), run_facets=run_facets)


def _unique(datasets: list[Any]) -> list[Any]:
    seen: set[DatasetId] = set()
    kept = []
    for dataset in datasets:
        key = DatasetId(dataset.namespace, dataset.name)
        if key not in seen:
            seen.add(key)
            kept.append(dataset)
    return kept


def ray_job_lineage(operator: Any) -> OperatorLineage:
    """For :class:`~nuro_ml.operators.ray.RayJobOperator` (and ``@task.ray``) after success."""
    return training_lineage(
        result=kept_result(operator),
        engine="ray",
        job_id=getattr(operator, "_job_id", None),
        inlets=operator.inlets,
        outlets=operator.outlets,
    )


def kuberay_job_lineage(operator: Any) -> OperatorLineage:
    """For :class:`~nuro_ml.operators.kuberay.KubeRayJobOperator` after success."""
    target = getattr(operator, "_target", None)
    return training_lineage(
        result=None,
        engine="kuberay",
        job_id=f"{target[1]}/{target[0]}" if target else None,
        inlets=operator.inlets,
        outlets=operator.outlets,
    )


def slurm_job_lineage(operator: Any) -> OperatorLineage:
    """For :class:`~nuro_ml.operators.slurm.SlurmJobOperator` after success."""
    return training_lineage(
        result=None,
        engine="slurm",
        job_id=getattr(operator, "job_id", None),
        inlets=operator.inlets,
        outlets=operator.outlets,
    )
