"""OpenLineage datasets and facets of the provider's operators.

The operators' ``get_openlineage_facets_on_complete`` methods import from here lazily, so
``apache-airflow-providers-openlineage`` (the ``openlineage`` extra) is needed only where lineage
is collected. The data flow they describe: MCAP drive logs -> Parquet tables (ETL) -> Feast
feature views and online store (materialization) -> model artifact (training).
"""
