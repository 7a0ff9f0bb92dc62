"""OpenLineage facets built from what the operators know: schemas, counts, lifecycle, job ids.

Standard facets wherever the OpenLineage spec has one; the two facets of our own carry what it
has none for (the partitions a run replaced, the outputs of a Terraform workspace) and are named
with the ``nuro_ml_`` prefix, as the spec asks of custom facets.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attr
from openlineage.client.event_v2 import InputDataset, OutputDataset
from openlineage.client.facet_v2 import (
    DatasetFacet,
    InputDatasetFacet,
    OutputDatasetFacet,
    RunFacet,
    external_query_run,
    input_statistics_input_dataset,
    lifecycle_state_change_dataset,
    output_statistics_output_dataset,
    schema_dataset,
)

from nuro_ml.lineage.naming import DatasetId

if TYPE_CHECKING:
    import pyarrow as pa

FACETS_SCHEMA_BASE = "https://nuro-ml.dev/spec/facets/1-0-0"


@attr.define
class PartitionsDatasetFacet(DatasetFacet):
    """The partitions of a partitioned table that this run wrote or confirmed up to date."""

    written: list[str] = attr.field(factory=list)
    up_to_date: list[str] = attr.field(factory=list)

    @staticmethod
    def _get_schema() -> str:
        return f"{FACETS_SCHEMA_BASE}/PartitionsDatasetFacet.json#/$defs/PartitionsDatasetFacet"


@attr.define
class TerraformWorkspaceDatasetFacet(DatasetFacet):
    """Names of a workspace's root-module outputs (never their values) and its destroyed resources."""

    outputs: list[str] = attr.field(factory=list)
    destroyed: int | None = attr.field(default=None)

    @staticmethod
    def _get_schema() -> str:
        return (
            f"{FACETS_SCHEMA_BASE}/TerraformWorkspaceDatasetFacet.json#/$defs/TerraformWorkspaceDatasetFacet"
        )


def schema_facet(fields: Iterable[tuple[str, str, str | None]]) -> schema_dataset.SchemaDatasetFacet:
    """A schema facet from ``(name, type, description)`` triples."""
    return schema_dataset.SchemaDatasetFacet(
        fields=[
            schema_dataset.SchemaDatasetFacetFields(name=name, type=kind, description=description)
            for name, kind, description in fields
        ]
    )


def arrow_fields(schema: pa.Schema) -> list[tuple[str, str, str | None]]:
    """``(name, type, None)`` of every column of an Arrow schema, nested types as Arrow prints them."""
    return [(field.name, str(field.type), None) for field in schema]


def output_statistics(
    *, rows: int | None = None, size: int | None = None, files: int | None = None
) -> output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet:
    return output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
        rowCount=rows, size=size, fileCount=files
    )


def input_statistics(
    *, rows: int | None = None, size: int | None = None, files: int | None = None
) -> input_statistics_input_dataset.InputStatisticsInputDatasetFacet:
    return input_statistics_input_dataset.InputStatisticsInputDatasetFacet(
        rowCount=rows, size=size, fileCount=files
    )


def lifecycle(state: str) -> lifecycle_state_change_dataset.LifecycleStateChangeDatasetFacet:
    """``state`` is a :class:`LifecycleStateChange` name: CREATE, DROP, OVERWRITE, ALTER, ..."""
    change = lifecycle_state_change_dataset.LifecycleStateChange[state]
    return lifecycle_state_change_dataset.LifecycleStateChangeDatasetFacet(lifecycleStateChange=change)


def external_job(job_id: str, source: str) -> dict[str, RunFacet]:
    """Run facet naming the job in the engine that ran it (Ray submission id, Slurm job id, RayJob)."""
    return {"externalQuery": external_query_run.ExternalQueryRunFacet(externalQueryId=job_id, source=source)}


def input_dataset(
    dataset: DatasetId,
    facets: Mapping[str, DatasetFacet] | None = None,
    input_facets: Mapping[str, InputDatasetFacet] | None = None,
) -> InputDataset:
    return InputDataset(
        namespace=dataset.namespace,
        name=dataset.name,
        facets=dict(facets or {}),
        inputFacets=dict(input_facets or {}),
    )


def output_dataset(
    dataset: DatasetId,
    facets: Mapping[str, DatasetFacet] | None = None,
    output_facets: Mapping[str, OutputDatasetFacet] | None = None,
) -> OutputDataset:
    return OutputDataset(
        namespace=dataset.namespace,
        name=dataset.name,
        facets=dict(facets or {}),
        outputFacets=dict(output_facets or {}),
    )


def declared_datasets(assets: Sequence[Any]) -> list[DatasetId]:
    """Datasets of the Airflow assets an operator declares as ``inlets`` or ``outlets``."""
    from nuro_ml.lineage.naming import path_dataset

    found = []
    for asset in assets:
        uri = getattr(asset, "uri", None)
        if isinstance(uri, str) and uri:
            found.append(path_dataset(uri))
    return found
