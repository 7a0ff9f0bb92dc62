"""What a submission carries to Slurm, whichever way it is sent: the batch script text, the
``--time`` text and the environment the job (and every Slurm command) starts with."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

from nuro_ml.exceptions import SlurmJobError
from nuro_ml.slurm.models import SlurmJobSpec

#: Environment variables of the worker that reach a submitted job; everything else (Airflow
#: settings, connection URIs, credentials) stays on the worker.
PASSTHROUGH_ENV: tuple[str, ...] = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ")


def format_time_limit(value: int | str | timedelta) -> str:
    """``--time`` text: minutes for an int, ``D-HH:MM:SS`` for a timedelta, text as given."""
    if isinstance(value, timedelta):
        total = int(value.total_seconds())
        if total <= 0:
            raise SlurmJobError(f"time_limit must be positive, got {value}")
        days, rest = divmod(total, 86400)
        hours, rest = divmod(rest, 3600)
        minutes, seconds = divmod(rest, 60)
        return f"{days}-{hours:02d}:{minutes:02d}:{seconds:02d}"
    if isinstance(value, int):
        if value <= 0:
            raise SlurmJobError(f"time_limit must be positive, got {value} minutes")
        return str(value)
    return value


def batch_script_text(spec: SlurmJobSpec) -> str | None:
    """The script to send on stdin (None when sbatch reads ``script_path`` itself)."""
    if (spec.script is None) == (spec.script_path is None):
        raise SlurmJobError("give exactly one of script (inline text) or script_path (a file)")
    if spec.script_path is not None:
        if not Path(spec.script_path).is_file():
            raise SlurmJobError(f"batch script {spec.script_path} does not exist or is not a file")
        return None
    script = spec.script or ""
    if not script.strip():
        raise SlurmJobError("the batch script is empty")
    # sbatch rejects a script without an interpreter line; plain commands run under bash.
    if not script.startswith("#!"):
        script = "#!/bin/bash\n" + script
    return script


def job_environment(extra: Mapping[str, str], slurm_conf: str | None) -> dict[str, str]:
    """Environment for Slurm commands: a few worker variables, ``SLURM_CONF`` and ``extra``."""
    env = {k: os.environ[k] for k in PASSTHROUGH_ENV if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    if slurm_conf:
        env["SLURM_CONF"] = slurm_conf
    elif "SLURM_CONF" in os.environ:
        env["SLURM_CONF"] = os.environ["SLURM_CONF"]
    for key, value in extra.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise SlurmJobError(f"environment must map str to str; got {key!r}={value!r}")
        env[key] = value
    return env
