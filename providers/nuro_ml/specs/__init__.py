"""YAML specs with located errors: the reader that keeps node positions and the problem records.

Shared by the pipeline specs (:mod:`nuro_ml.pipelines`) and the ETL topic mapping
(:mod:`nuro_ml.etl.mapping`); it imports neither, so the ETL library can use it without the
DAG compiler.
"""
