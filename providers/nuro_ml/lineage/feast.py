"""Lineage of Feast: batch sources in, feature views and their online-store tables out."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from nuro_ml.lineage import facets
from nuro_ml.lineage.naming import DatasetId, feature_view_dataset, online_store_dataset, path_dataset
from nuro_ml.lineage.results import kept_result

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from feast import FeatureStore, FeatureView
    from openlineage.client.event_v2 import InputDataset


def view_schema_fields(view: FeatureView) -> list[tuple[str, str, str | None]]:
    """Join keys and features of a view with their Feast types and descriptions."""
    fields = [(column.name, str(column.dtype), column.description or None) for column in view.entity_columns]
    names = {name for name, _, _ in fields}
    fields += [
        (feature.name, str(feature.dtype), feature.description or None)
        for feature in view.features
        if feature.name not in names
    ]
    return fields


def batch_source_dataset(view: FeatureView, repo_path: str | Path) -> DatasetId | None:
    """The table a view is computed from, when it is a file or object-store source."""
    from feast.infra.offline_stores.file_source import FileSource

    source = view.batch_source
    if not isinstance(source, FileSource):
        return None
    return path_dataset(FileSource.get_uri_for_file_path(Path(repo_path), source.path))


def feature_view_inputs(
    store: FeatureStore, project: str, views: list[str], *, rows: int | None = None
) -> list[InputDataset]:
    """The feature views a job read, as inputs (``rows``: rows it read through them)."""
    stats = {"inputStatistics": facets.input_statistics(rows=rows)} if rows is not None else {}
    found = []
    for name in views:
        view = store.get_feature_view(name)
        found.append(
            facets.input_dataset(
                feature_view_dataset(project, name),
                {"schema": facets.schema_facet(view_schema_fields(view))},
                stats,
            )
        )
    return found


def materialize_lineage(
    *, store: FeatureStore, project: str, online_target: str, repo_path: str | Path, result: dict[str, Any]
) -> OperatorLineage:
    """One materialization: each view's batch source in; the view and its online table out."""
    from airflow.providers.openlineage.extractors import OperatorLineage

    inputs: dict[DatasetId, InputDataset] = {}
    outputs = []
    for name, rows in sorted((result.get("rows") or {}).items()):
        view = store.get_feature_view(name)
        source = batch_source_dataset(view, repo_path)
        if source is not None:
            inputs.setdefault(source, facets.input_dataset(source))
        schema = {"schema": facets.schema_facet(view_schema_fields(view))}
        stats = {"outputStatistics": facets.output_statistics(rows=int(rows))}
        outputs.append(facets.output_dataset(feature_view_dataset(project, name), schema, stats))
        outputs.append(
            facets.output_dataset(online_store_dataset(online_target, project, name), schema, stats)
        )
    return OperatorLineage(inputs=list(inputs.values()), outputs=outputs)


def materialize_operator_lineage(operator: Any) -> OperatorLineage:
    """For :class:`~nuro_ml.operators.feast.FeastMaterializeOperator` after it succeeded."""
    hook = operator.hook
    # The repository's feature_store.yaml with the connection's overrides, as the task used it.
    resolved = hook.resolved
    return materialize_lineage(
        store=hook.store,
        project=resolved.project,
        online_target=resolved.online_target(),
        repo_path=resolved.repo_path,
        result=kept_result(operator) or {},
    )
