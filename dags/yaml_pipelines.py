"""Airflow DAG file for the YAML pipeline specs in ``pipelines/``: one DAG per valid spec file.

A spec that fails to parse or validate leaves out only its own DAG. It is reported as the import
error of ``yaml_pipelines_check.py`` (file, line, column, field and what was expected), not of
this file: Airflow stops every DAG of a file that has an import error, and all pipeline DAGs are
defined here (see ``nuro_ml.pipelines.import_errors``). Validate specs before committing them with
``nuro-ml validate dags/pipelines``.
"""

from __future__ import annotations

from pathlib import Path

from nuro_ml.pipelines.loader import load_dags

globals().update(load_dags(Path(__file__).resolve().parent / "pipelines"))
