"""Exceptions raised by the nuro-ml provider; each names the resource it concerns."""

from __future__ import annotations

from airflow.exceptions import AirflowException


class NuroMLException(AirflowException):
    """Base class for every error raised by the nuro-ml provider."""


class TerraformError(NuroMLException):
    """Terraform exited with an error; the message carries its diagnostics (file:line)."""


class StalePlanError(TerraformError):
    """A saved plan no longer matches the state it was made against."""


class ETLError(NuroMLException):
    """The sensor-log ETL could not produce its output."""


class TooManyBadFilesError(ETLError):
    """More input files were quarantined than the configured share allows."""


class FeatureStoreError(NuroMLException):
    """A Feast operation (apply, materialize, retrieval) failed."""


class CapacityError(NuroMLException):
    """The GPU-capacity ledger or a capacity backend failed."""


class QuotaExceededError(CapacityError):
    """A request can never be admitted: it asks for more than its team's quota or the pool."""


class RayJobError(NuroMLException):
    """A Ray job failed, was stopped, or could not be submitted."""


class KubeRayJobError(NuroMLException):
    """A KubeRay RayJob failed, was deleted, or exceeded its deadline."""


class SlurmJobError(NuroMLException):
    """A Slurm batch job failed, was cancelled, or could not be submitted."""


class PipelineSpecError(NuroMLException):
    """A YAML pipeline spec is invalid; the message names file, line and field."""
