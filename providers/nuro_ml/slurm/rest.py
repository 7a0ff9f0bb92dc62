"""slurmrestd (OpenAPI ``v0.0.38``) request bodies and replies, translated to and from the
records the hooks use (pure functions, checked against the OpenAPI schema and captured replies)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from nuro_ml.exceptions import SlurmJobError
from nuro_ml.slurm.models import SlurmJobInfo, SlurmJobSpec, SlurmNodeGres
from nuro_ml.slurm.output import expand_output_path
from nuro_ml.slurm.parsing import INVALID_JOB_TEXT, clean_value, parse_gres
from nuro_ml.slurm.state import SlurmJobState
from nuro_ml.slurm.submit import batch_script_text, format_time_limit, job_environment

REST_API_VERSION = "v0.0.38"
#: error_number slurmrestd reports for an unknown job id (ESLURM_INVALID_JOB_ID).
_REST_INVALID_JOB = 2017

_TIME_LIMIT = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
_MEMORY = re.compile(r"^(\d+)([KMGT]?)B?$", re.IGNORECASE)


def time_limit_minutes(value: int | str | timedelta) -> int:
    """Minutes for slurmrestd's ``time_limit`` from any form ``--time`` accepts (rounded up)."""
    text = format_time_limit(value) if isinstance(value, int | timedelta) else value.strip()
    match = _TIME_LIMIT.match(text)
    if not match:
        raise SlurmJobError(f"time_limit {value!r} is not a Slurm time (minutes, [D-]HH:MM:SS, ...)")
    days, first, second, third = match.groups()
    if days is not None:  # D-HH[:MM[:SS]]
        seconds = int(days) * 86400 + int(first) * 3600 + int(second or 0) * 60 + int(third or 0)
    elif third is not None:  # HH:MM:SS
        seconds = int(first) * 3600 + int(second) * 60 + int(third)
    elif second is not None:  # MM:SS
        seconds = int(first) * 60 + int(second)
    else:  # MM
        seconds = int(first) * 60
    return max(1, -(-seconds // 60))


def memory_megabytes(value: str) -> int:
    """``--mem`` text (``4000``, ``16G``, ``512M``) as megabytes, the unit slurmrestd takes."""
    match = _MEMORY.match(value.strip())
    if not match:
        raise SlurmJobError(f"memory {value!r} is not a Slurm size such as 4000, 512M or 16G")
    factor = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}[match.group(2).upper()]
    return max(1, int(int(match.group(1)) * factor))


def rest_submit_body(spec: SlurmJobSpec, *, partition: str | None, account: str | None) -> dict[str, Any]:
    """The ``POST /slurm/v0.0.38/job/submit`` body for ``spec``."""
    if spec.extra_args:
        raise SlurmJobError(
            f"extra sbatch arguments {list(spec.extra_args)} cannot be sent through slurmrestd; "
            "put them in the script as #SBATCH lines"
        )
    script = batch_script_text(spec)
    if script is None:
        script = batch_script_text(SlurmJobSpec(script=Path(spec.script_path or "").read_text()))
    env = job_environment(spec.environment, None)
    if "SLURM_CONF" not in spec.environment:
        # The worker's client configuration means nothing on the cluster behind slurmrestd.
        env.pop("SLURM_CONF", None)
    job: dict[str, Any] = {
        "environment": env,
        # slurmrestd needs a working directory; the submitting user's home is what sbatch would use.
        "current_working_directory": spec.working_directory or env.get("HOME", "/tmp"),
    }
    optional: dict[str, Any] = {
        "name": spec.name,
        "comment": spec.comment,
        "partition": partition,
        "account": account,
        "cpus_per_task": spec.cpus_per_task,
        "standard_output": spec.output_path,
        "standard_error": spec.error_path,
    }
    job.update({k: v for k, v in optional.items() if v})
    if spec.gpus:
        job["gres"] = f"gpu:{spec.gpu_type}:{spec.gpus}" if spec.gpu_type else f"gpu:{spec.gpus}"
    if spec.nodelist:
        job["required_nodes"] = list(spec.nodelist)
        job["nodes"] = str(len(spec.nodelist))
    if spec.memory:
        job["memory_per_node"] = memory_megabytes(spec.memory)
    if spec.time_limit is not None:
        job["time_limit"] = time_limit_minutes(spec.time_limit)
    return {"script": script, "job": job}


def rest_wait_status(raw: int | None) -> tuple[int | None, int | None]:
    """slurmrestd reports the raw wait status: ``exit 3`` is 768, SIGTERM is 15."""
    if raw is None:
        return None, None
    return (raw >> 8) & 0xFF, raw & 0x7F


def job_info_from_rest(job: Mapping[str, Any]) -> SlurmJobInfo:
    """Build a :class:`SlurmJobInfo` from one entry of a ``/job/{id}`` or ``/jobs`` reply."""
    job_id = str(job["job_id"])
    state = SlurmJobState.parse(str(job["job_state"]))
    exit_code, sig = rest_wait_status(job.get("exit_code")) if state.is_terminal() else (None, None)
    name = str(job.get("name") or "")
    work_dir = clean_value(job.get("current_working_directory") or None)
    user = job.get("user_name")
    stdout = expand_output_path(
        job.get("standard_output"), job_id=job_id, name=name, user=user, work_dir=work_dir
    )
    stderr = (
        expand_output_path(job["standard_error"], job_id=job_id, name=name, user=user, work_dir=work_dir)
        if job.get("standard_error")
        else stdout
    )
    return SlurmJobInfo(
        job_id=job_id,
        name=name,
        state=state,
        exit_code=exit_code,
        signal=sig,
        reason=clean_value(job.get("state_reason") or None),
        partition=clean_value(job.get("partition") or None),
        nodes=clean_value(job.get("nodes") or None),
        comment=clean_value(job.get("comment") or None),
        work_dir=work_dir,
        stdout_path=stdout,
        stderr_path=stderr,
    )


#: slurmrestd node ``state_flags`` and the sinfo suffix or state they stand for.
_REST_FLAG_SUFFIX = {
    "NOT_RESPONDING": "*",
    "POWERED_DOWN": "~",
    "POWERING_UP": "#",
    "POWER_DOWN": "!",
    "POWERING_DOWN": "%",
    "REBOOT_REQUESTED": "@",
    "REBOOT_ISSUED": "^",
    "PLANNED": "-",
}


def rest_node_state(state: str, flags: Sequence[str]) -> str:
    """The ``sinfo`` long state for a slurmrestd node ``state`` plus ``state_flags``."""
    base = state.lower()
    flag_set = {f.upper() for f in flags}
    if "INVALID_REG" in flag_set:
        base = "inval"
    elif "MAINTENANCE" in flag_set:
        base = "maint"
    elif "FAIL" in flag_set:
        base = "fail" if base in ("idle", "down") else "failing"
    elif "DRAIN" in flag_set:
        base = "drained" if base in ("idle", "down") else "draining"
    elif "RESERVED" in flag_set:
        base = "reserved"
    return base + "".join(suffix for flag, suffix in _REST_FLAG_SUFFIX.items() if flag in flag_set)


def nodes_from_rest(nodes: Sequence[Mapping[str, Any]]) -> list[SlurmNodeGres]:
    """One :class:`SlurmNodeGres` per (node, partition) from a ``/nodes`` reply."""
    rows = []
    for node in nodes:
        state = rest_node_state(str(node.get("state", "unknown")), node.get("state_flags") or [])
        for partition in node.get("partitions") or []:
            rows.append(
                SlurmNodeGres(
                    node=str(node["name"]),
                    partition=str(partition),
                    state=state,
                    gres=parse_gres(node.get("gres")),
                    gres_used=parse_gres(node.get("gres_used")),
                    cpus_idle=node.get("idle_cpus"),
                )
            )
    return rows


def rest_error_text(payload: Mapping[str, Any]) -> str:
    """The ``errors`` of a slurmrestd reply as one line ('' when there are none)."""
    parts = []
    for err in payload.get("errors") or []:
        text = err.get("error") or "error"
        if err.get("description"):
            text += f" ({err['description']})"
        parts.append(text)
    return "; ".join(parts)


def rest_is_unknown_job(payload: Mapping[str, Any]) -> bool:
    return any(
        err.get("error_number") == _REST_INVALID_JOB or err.get("error") == INVALID_JOB_TEXT
        for err in payload.get("errors") or []
    )
