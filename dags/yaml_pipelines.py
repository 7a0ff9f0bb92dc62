"""Airflow DAG file for the YAML pipeline specs in ``pipelines/``: one DAG per spec file.

A spec that fails to parse or validate is reported as an import error of that YAML file
(file, line, column, field and what was expected) and the other pipelines keep loading.
Validate specs before committing them with ``nuro-ml validate dags/pipelines``.
"""

from __future__ import annotations

from pathlib import Path

from nuro_ml.pipelines.loader import load_dags

globals().update(load_dags(Path(__file__).resolve().parent / "pipelines"))
