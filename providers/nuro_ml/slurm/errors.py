"""Telling an unknown job apart from other failures, for both the commands and slurmrestd."""

from __future__ import annotations

from nuro_ml.exceptions import SlurmCommandError
from nuro_ml.slurm.parsing import INVALID_JOB_TEXT
from nuro_ml.slurm.rest import rest_is_unknown_job


def is_unknown_job(err: SlurmCommandError) -> bool:
    """Whether ``err`` says slurmctld does not know the job (forgotten or never existed)."""
    return INVALID_JOB_TEXT in err.stderr or (err.payload is not None and rest_is_unknown_job(err.payload))
