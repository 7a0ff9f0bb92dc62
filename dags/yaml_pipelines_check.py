"""Airflow DAG file that defines no DAG: it fails to import while a spec in ``pipelines/`` is broken.

The failure is the import error Airflow shows for the YAML pipelines: every broken spec with
``file:line:col: field: message``. It lives in its own DAG file because Airflow keeps an import
error only under a DAG file it parses (a ``*.yaml`` path is dropped at every bundle refresh) and
marks every DAG of that file stale; ``yaml_pipelines.py`` defines the pipeline DAGs and must not
fail (see ``nuro_ml.pipelines.import_errors``). The error clears at the first parse after the
specs are fixed or removed.
"""

from __future__ import annotations

from pathlib import Path

from nuro_ml.pipelines.loader import check_folder

check_folder(Path(__file__).resolve().parent / "pipelines")
