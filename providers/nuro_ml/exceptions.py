"""Exceptions raised by the nuro-ml provider; each names the resource it concerns.

They do not derive from ``AirflowException``: the ETL, capacity and feature libraries raise them
inside Spark and Ray worker processes, where importing Airflow initialises its settings from the
task's environment (a scheduler-run task's database URL is deliberately unusable there) and fails
before any work is done. Airflow fails a task on any exception, so nothing is lost by that.

An error that comes from an engine's API carries the answer's HTTP status in ``status_code``;
retry and "not found" decisions are made on it (:func:`is_transient_status`), never on the
message text.
"""

from __future__ import annotations

from typing import Any


class NuroMLException(Exception):
    """Base class for every error raised by the nuro-ml provider."""

    #: Exit code of ``nuro-ml`` when a command fails with this error (1: the work failed).
    exit_code: int = 1
    #: HTTP status of the engine API answer behind the error; None when there was no answer
    #: (connection refused, timeout) or the error did not come from an API.
    status_code: int | None = None

    def __init__(self, *args: object, status_code: int | None = None) -> None:
        super().__init__(*args)
        if status_code is not None:
            self.status_code = status_code

    @property
    def is_transient(self) -> bool:
        """A retry may succeed: the API was overloaded or failed itself (429, 5xx)."""
        return is_transient_status(self.status_code)


def is_transient_status(status_code: int | None) -> bool:
    """429 and 5xx answers may change on a retry; other answers (a 4xx) will not."""
    return status_code is not None and (status_code == 429 or status_code >= 500)


class UsageError(NuroMLException):
    """A command or call was given missing, conflicting or malformed arguments (``nuro-ml`` exits 2)."""

    exit_code = 2


class TerraformError(NuroMLException):
    """Terraform exited with an error; the message carries its diagnostics (file:line)."""


class StalePlanError(TerraformError):
    """A saved plan no longer matches the state it was made against."""


class ETLError(NuroMLException):
    """The sensor-log ETL could not produce its output."""


class ETLInputNotFoundError(ETLError):
    """The ETL's input path does not exist."""


class NoLogsInIntervalError(ETLError):
    """The interval has no drive logs under the input path."""


class UnmappedTopicError(ETLError):
    """A topic's messages would end in no table and the topic mapping does not exclude them."""


class TooManyBadFilesError(ETLError):
    """More input files were quarantined than the configured share allows."""


class FeatureStoreError(NuroMLException):
    """A Feast operation (apply, materialize, retrieval) failed."""


class CapacityError(NuroMLException):
    """The GPU-capacity ledger or a capacity backend failed."""


class QuotaExceededError(CapacityError):
    """A request can never be admitted: it asks for more than its team's quota or the pool."""


class KubernetesApiError(NuroMLException):
    """A Kubernetes API request failed; ``status_code`` is the HTTP status."""

    def __init__(
        self, message: str, *, status_code: int | None = None, status: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message, status_code=status_code)
        #: The API's ``Status`` object (``message``, ``reason``, ``details.causes``), when it sent one.
        self.status: dict[str, Any] = dict(status or {})


class RayJobError(NuroMLException):
    """A Ray job failed, was stopped, or could not be submitted."""


class KubeRayJobError(NuroMLException):
    """A KubeRay RayJob failed, was deleted, or exceeded its deadline."""


class SlurmJobError(NuroMLException):
    """A Slurm batch job failed, was cancelled, or could not be submitted."""


class PipelineSpecError(NuroMLException):
    """A YAML pipeline spec is invalid; the message names file, line and field."""


class RayJobSpecInvalidError(KubeRayJobError):
    """A RayJob manifest breaks the KubeRay CRD schema or KubeRay/Kueue rules; names each field path."""

    def __init__(
        self, message: str, violations: list[str] | None = None, *, status_code: int | None = None
    ) -> None:
        super().__init__(message, status_code=status_code)
        #: ``"<field path>: <problem>"`` for every violation found, sorted by path.
        self.violations: list[str] = list(violations or [])


class SlurmCommandError(SlurmJobError):
    """A Slurm command (sbatch, scontrol, ...) or slurmrestd request failed or timed out."""

    def __init__(
        self,
        argv: list[str],
        returncode: int | None,
        stderr: str,
        *,
        outcome: str | None = None,
        payload: dict[str, object] | None = None,
    ) -> None:
        #: The command line, or ``[METHOD, path]`` for a slurmrestd request.
        self.argv = list(argv)
        #: Exit code or HTTP status; None when the call timed out.
        self.returncode = returncode
        self.stderr = stderr.strip()
        #: The decoded slurmrestd reply, when there was one.
        self.payload = payload
        outcome = outcome or ("timed out" if returncode is None else f"exited with {returncode}")
        super().__init__(f"`{' '.join(self.argv[:3])} ...` {outcome}: {self.stderr or '(no error text)'}")


class RayJobAlreadyExistsError(KubeRayJobError):
    """Creating a RayJob returned HTTP 409: one with that name already exists in the namespace."""

    status_code = 409


class RayJobNotFoundError(RayJobError):
    """The Ray Jobs API has no job with the given submission id (HTTP 404)."""

    status_code = 404


class TerraformStateLockedError(TerraformError):
    """Terraform could not acquire the state lock within the lock timeout; nothing was changed."""


class ShardCacheError(FeatureStoreError):
    """A training shard could not be fetched into the local cache or failed its checksum."""


class TrainingDataError(NuroMLException):
    """Training shards could not be staged or read; the message names the spec field or partition."""


class StreamError(ETLError):
    """The telemetry stream could not be started, stopped or watched; names its state folder."""
