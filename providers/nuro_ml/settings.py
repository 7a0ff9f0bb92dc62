"""Locations and defaults shared by the CLI, the DAGs and the operators.

Everything the embedded demo writes lives under one data directory so that a run can be
inspected, reused by the next run (caches, ledger) or removed in one go.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The repository checkout this package was installed from (editable install), used to find
#: the bundled Terraform environments, feature repository and workloads.
REPO_ROOT = Path(__file__).resolve().parents[2]


def data_dir() -> Path:
    """Root of everything the platform writes locally (``NURO_ML_DATA_DIR``, default ``.nuro/``)."""
    return Path(os.environ.get("NURO_ML_DATA_DIR", REPO_ROOT / ".nuro")).resolve()


def stream_dir() -> Path:
    """The telemetry stream's landing area, checkpoint and state (progress record) live here."""
    return data_dir() / "stream"


def raw_logs_dir() -> Path:
    """Where drive logs (MCAP) land, one directory per date and vehicle."""
    return data_dir() / "raw"


def etl_output_dir() -> Path:
    """Root of the ML-ready Parquet tables written by the ETL."""
    return data_dir() / "etl"


def quarantine_dir() -> Path:
    """Where unreadable input files are moved, with a manifest."""
    return data_dir() / "quarantine"


def feature_repo_dir() -> Path:
    """The Feast feature repository shipped with the platform."""
    return Path(os.environ.get("NURO_ML_FEATURE_REPO", REPO_ROOT / "feature_repo")).resolve()


def feast_dir() -> Path:
    """Feast's local registry and online store for the embedded defaults."""
    return data_dir() / "feast"


def artifacts_dir() -> Path:
    """Model files and metrics written by training jobs."""
    return data_dir() / "artifacts"


def ledger_url() -> str:
    """SQLAlchemy URL of the GPU quota ledger (``NURO_ML_LEDGER_URL``, default SQLite)."""
    return os.environ.get("NURO_ML_LEDGER_URL", f"sqlite:///{data_dir() / 'ledger.db'}")


def terraform_dir() -> Path:
    """The Terraform configurations shipped with the platform."""
    return REPO_ROOT / "terraform"


def workloads_dir() -> Path:
    """Code shipped to the training clusters as the Ray job's working_dir."""
    return REPO_ROOT / "workloads"
