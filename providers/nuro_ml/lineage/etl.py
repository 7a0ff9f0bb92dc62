"""Lineage of the MCAP -> Parquet ETL: the drive-log folder in, one dataset per Parquet table out."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from nuro_ml import settings
from nuro_ml.lineage import facets
from nuro_ml.lineage.naming import DatasetId, path_dataset, table_dataset
from nuro_ml.lineage.results import kept_result

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage

log = logging.getLogger(__name__)


def table_schema_fields(dataset: DatasetId) -> list[tuple[str, str, str | None]] | None:
    """Columns of a written table, partition columns included, read from its Parquet footers."""
    import pyarrow.dataset as ds

    try:
        source = dataset.name if dataset.namespace == "file" else f"{dataset.namespace}/{dataset.name}"
        return facets.arrow_fields(ds.dataset(source, format="parquet", partitioning="hive").schema)
    except (OSError, ValueError) as err:
        # The job ran elsewhere (a cluster's object store this worker cannot read): no schema facet.
        log.warning("No schema for %s/%s: %s", dataset.namespace, dataset.name, err)
        return None


def etl_lineage(
    *, input_path: str | None, output_path: str | None, result: dict[str, Any] | None
) -> OperatorLineage:
    """Inputs and outputs of one ETL run from its result (see :func:`nuro_ml.etl.job.run_etl`)."""
    from airflow.providers.openlineage.extractors import OperatorLineage

    result = result or {}
    logs = path_dataset(input_path or settings.raw_logs_dir())
    messages = sum(int(n) for n in (result.get("messages") or {}).values())
    inputs = [
        facets.input_dataset(
            logs,
            input_facets={
                "inputStatistics": facets.input_statistics(
                    rows=messages, size=result.get("bytes"), files=result.get("files")
                )
            },
        )
    ]
    output_root = output_path or settings.etl_output_dir()
    written = list(result.get("partitions") or [])
    up_to_date = list(result.get("up_to_date") or [])
    changed = [p for p in written if p not in set(up_to_date)]
    outputs = []
    for table, rows in sorted((result.get("rows") or {}).items()):
        dataset = table_dataset(output_root, table)
        dataset_facets: dict[str, Any] = {
            "nuro_ml_partitions": facets.PartitionsDatasetFacet(written=changed, up_to_date=up_to_date),
        }
        if changed:
            # The interval's partitions are replaced, the rest of the table is kept.
            dataset_facets["lifecycleStateChange"] = facets.lifecycle("OVERWRITE")
        fields = table_schema_fields(dataset)
        if fields:
            dataset_facets["schema"] = facets.schema_facet(fields)
        outputs.append(
            facets.output_dataset(
                dataset, dataset_facets, {"outputStatistics": facets.output_statistics(rows=int(rows))}
            )
        )
    return OperatorLineage(inputs=inputs, outputs=outputs)


def etl_operator_lineage(operator: Any) -> OperatorLineage:
    """For :class:`~nuro_ml.operators.spark.MCAPToParquetOperator` after it succeeded."""
    return etl_lineage(
        input_path=operator.input_path, output_path=operator.output_path, result=kept_result(operator)
    )
