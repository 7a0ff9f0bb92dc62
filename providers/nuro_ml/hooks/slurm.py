"""Hooks for Slurm: submit, inspect and cancel batch jobs, and read GPU (GRES) usage per node.

Two ways to reach a cluster, chosen by the ``slurm`` connection:

* the Slurm commands (``sbatch``, ``scontrol``, ``squeue``, ``sinfo``, ``sacct``, ``scancel``)
  with the cluster's ``slurm_conf``; they authenticate through munge on the machine they run on;
* slurmrestd at ``rest_url`` (OpenAPI ``v0.0.38``), with a JWT over HTTP(S) or local auth on a
  unix socket.

:class:`SlurmHook` is blocking and used by operators and the capacity back end;
:class:`AsyncSlurmHook` runs the same calls as asyncio subprocesses or async HTTP requests so a
trigger never blocks the triggerer's event loop.

Live jobs are read with ``scontrol show job -o`` (or ``GET /job/{id}``), which is
authoritative while slurmctld remembers the job (``MinJobAge``). With the commands, older jobs
are read from ``sacct`` when the cluster has accounting storage; otherwise a forgotten job is
reported as not found.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import httpx
import tenacity
from airflow.sdk import BaseHook, Connection
from airflow.sdk.exceptions import AirflowNotFoundException

from nuro_ml.exceptions import SlurmCommandError, SlurmJobError

#: Environment variables of the worker that reach a submitted job; everything else (Airflow
#: settings, connection URIs, credentials) stays on the worker.
PASSTHROUGH_ENV: tuple[str, ...] = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ")

_INVALID_JOB = "Invalid job id specified"


class SlurmJobState(StrEnum):
    """Base job states as ``scontrol``/``squeue``/``sacct`` print them."""

    PENDING = "PENDING"
    CONFIGURING = "CONFIGURING"
    RUNNING = "RUNNING"
    COMPLETING = "COMPLETING"
    SUSPENDED = "SUSPENDED"
    STOPPED = "STOPPED"
    SIGNALING = "SIGNALING"
    STAGE_OUT = "STAGE_OUT"
    RESIZING = "RESIZING"
    REQUEUED = "REQUEUED"
    REQUEUE_FED = "REQUEUE_FED"
    REQUEUE_HOLD = "REQUEUE_HOLD"
    SPECIAL_EXIT = "SPECIAL_EXIT"
    RESV_DEL_HOLD = "RESV_DEL_HOLD"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    NODE_FAIL = "NODE_FAIL"
    PREEMPTED = "PREEMPTED"
    BOOT_FAIL = "BOOT_FAIL"
    DEADLINE = "DEADLINE"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    REVOKED = "REVOKED"

    @classmethod
    def parse(cls, raw: str) -> SlurmJobState:
        """Read a state as printed, e.g. ``CANCELLED by 0`` (sacct) or ``COMPLETED+``."""
        token = raw.strip().split(" ", 1)[0].rstrip("+")
        try:
            return cls(token)
        except ValueError:
            raise SlurmJobError(f"unknown Slurm job state {raw!r}") from None

    def is_terminal(self) -> bool:
        """True once the job will not run again without someone resubmitting it."""
        return self in _TERMINAL_STATES

    def is_success(self) -> bool:
        return self is SlurmJobState.COMPLETED


_TERMINAL_STATES = frozenset(
    {
        SlurmJobState.COMPLETED,
        SlurmJobState.FAILED,
        SlurmJobState.CANCELLED,
        SlurmJobState.TIMEOUT,
        SlurmJobState.NODE_FAIL,
        SlurmJobState.PREEMPTED,
        SlurmJobState.BOOT_FAIL,
        SlurmJobState.DEADLINE,
        SlurmJobState.OUT_OF_MEMORY,
        SlurmJobState.REVOKED,
    }
)


@dataclass(frozen=True)
class SlurmJobInfo:
    """What Slurm knows about one batch job."""

    job_id: str
    name: str
    state: SlurmJobState
    #: Exit status of the batch script (``N`` of ``ExitCode=N:S``); None before it ends.
    exit_code: int | None = None
    #: Signal that ended the script (``S`` of ``ExitCode=N:S``), 0 when none.
    signal: int | None = None
    reason: str | None = None
    partition: str | None = None
    nodes: str | None = None
    comment: str | None = None
    work_dir: str | None = None
    stdout_path: str | None = None
    stderr_path: str | None = None

    @property
    def is_terminal(self) -> bool:
        return self.state.is_terminal()

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable form, for trigger events."""
        data = asdict(self)
        data["state"] = self.state.value
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SlurmJobInfo:
        values = dict(data)
        values["state"] = SlurmJobState.parse(values["state"])
        return cls(**values)

    def describe(self) -> str:
        """One line naming the job, its state, exit code and reason."""
        text = f"Slurm job {self.job_id} ({self.name}) is {self.state.value}"
        if self.exit_code is not None:
            text += f" with exit code {self.exit_code}"
            if self.signal:
                text += f" (signal {self.signal})"
        if self.reason:
            text += f", reason {self.reason}"
        return text


@dataclass(frozen=True)
class SlurmJobSpec:
    """A batch job to submit: the script plus the ``sbatch`` options the platform uses."""

    #: Batch script text (``#!`` line and ``#SBATCH`` directives allowed); or use ``script_path``.
    script: str | None = None
    #: Batch script file on the machine running the hook, submitted as it is.
    script_path: str | None = None
    name: str | None = None
    #: Free text stored with the job; the operators keep their idempotency key here.
    comment: str | None = None
    partition: str | None = None
    account: str | None = None
    gpus: int | None = None
    gpu_type: str | None = None
    cpus_per_task: int | None = None
    #: ``--mem`` value, e.g. ``4G``.
    memory: str | None = None
    #: ``--time``: minutes, ``[D-]HH:MM:SS`` text, or a timedelta.
    time_limit: int | str | timedelta | None = None
    environment: Mapping[str, str] = field(default_factory=dict)
    working_directory: str | None = None
    #: ``--output`` file pattern (``%j`` is the job id); stderr goes there too unless ``error_path``.
    output_path: str | None = None
    error_path: str | None = None
    extra_args: Sequence[str] = ()


@dataclass(frozen=True)
class SlurmNodeGres:
    """One node as seen from one partition, with its configured and allocated GRES."""

    node: str
    partition: str
    state: str
    #: ``{(name, type or None): count}``, from ``Gres``.
    gres: Mapping[tuple[str, str | None], int]
    #: Same keys, from ``GresUsed``.
    gres_used: Mapping[tuple[str, str | None], int]
    cpus_idle: int | None = None
    is_default_partition: bool = False

    def count(self, name: str = "gpu", gres_type: str | None = None, *, used: bool = False) -> int:
        """GRES of ``name`` (optionally only ``gres_type``) configured, or allocated if ``used``."""
        source = self.gres_used if used else self.gres
        return sum(n for (g, t), n in source.items() if g == name and (gres_type is None or t == gres_type))

    @property
    def accepts_jobs(self) -> bool:
        """Whether the scheduler can start new work here (not down, drained, failing...)."""
        return node_state_accepts_jobs(self.state)


# --- parsing of command output (pure functions, unit tested on captured output) ---------------

_SCONTROL_KEY = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_:/]*)=")


def parse_scontrol_record(line: str) -> dict[str, str]:
    """Split one ``scontrol show ... -o`` line into its ``Key=Value`` fields.

    Values may contain ``=`` and ``,`` (``TRES=cpu=1,node=1``); a new field starts only where
    whitespace is followed by ``Key=``.
    """
    matches = list(_SCONTROL_KEY.finditer(line))
    fields: dict[str, str] = {}
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(line)
        fields[match.group(1)] = line[match.end() : end].strip()
    return fields


def parse_exit_code(raw: str | None) -> tuple[int | None, int | None]:
    """``"3:0"`` -> ``(3, 0)``; missing or unparsable -> ``(None, None)``."""
    if not raw:
        return None, None
    status, _, sig = raw.partition(":")
    try:
        return int(status), int(sig or 0)
    except ValueError:
        return None, None


def _clean(value: str | None) -> str | None:
    if value is None or value in ("", "(null)", "N/A", "None"):
        return None
    return value


def job_info_from_scontrol(fields: Mapping[str, str]) -> SlurmJobInfo:
    """Build a :class:`SlurmJobInfo` from parsed ``scontrol show job -o`` fields."""
    state = SlurmJobState.parse(fields["JobState"])
    exit_code, sig = parse_exit_code(fields.get("ExitCode"))
    if not state.is_terminal():
        # scontrol prints ExitCode=0:0 for jobs that have not ended yet.
        exit_code, sig = None, None
    return SlurmJobInfo(
        job_id=fields["JobId"],
        name=fields.get("JobName", ""),
        state=state,
        exit_code=exit_code,
        signal=sig,
        reason=_clean(fields.get("Reason")),
        partition=_clean(fields.get("Partition")),
        nodes=_clean(fields.get("NodeList")),
        comment=_clean(fields.get("Comment")),
        work_dir=_clean(fields.get("WorkDir")),
        stdout_path=_clean(fields.get("StdOut")),
        stderr_path=_clean(fields.get("StdErr")),
    )


def parse_scontrol_jobs(text: str) -> list[SlurmJobInfo]:
    return [job_info_from_scontrol(parse_scontrol_record(line)) for line in text.splitlines() if line.strip()]


SACCT_FIELDS = (
    "JobID",
    "JobName",
    "State",
    "ExitCode",
    "Reason",
    "Partition",
    "NodeList",
    "WorkDir",
    "Comment",
)


def parse_sacct_jobs(text: str) -> list[SlurmJobInfo]:
    """Parse ``sacct -X -n -P -o`` :data:`SACCT_FIELDS` output (``|``-separated, comment last)."""
    jobs = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split("|", len(SACCT_FIELDS) - 1)
        if len(parts) != len(SACCT_FIELDS):
            raise SlurmJobError(
                f"unexpected sacct output line {line!r}: want fields {', '.join(SACCT_FIELDS)}"
            )
        row = dict(zip(SACCT_FIELDS, parts, strict=True))
        state = SlurmJobState.parse(row["State"])
        exit_code, sig = parse_exit_code(row["ExitCode"]) if state.is_terminal() else (None, None)
        jobs.append(
            SlurmJobInfo(
                job_id=row["JobID"],
                name=row["JobName"],
                state=state,
                exit_code=exit_code,
                signal=sig,
                reason=_clean(row["Reason"]),
                partition=_clean(row["Partition"]),
                nodes=_clean(row["NodeList"]),
                comment=_clean(row["Comment"]),
                work_dir=_clean(row["WorkDir"]),
            )
        )
    return jobs


def parse_sbatch_parsable(text: str) -> str:
    """``sbatch --parsable`` prints ``jobid`` or ``jobid;cluster``."""
    line = text.strip().splitlines()[-1] if text.strip() else ""
    job_id = line.split(";", 1)[0].strip()
    if not job_id.isdigit():
        raise SlurmJobError(f"sbatch did not print a job id (output {text.strip()!r})")
    return job_id


SQUEUE_LOOKUP_FORMAT = "JobID:|,Comment:|"


def parse_squeue_lookup(text: str) -> list[tuple[str, str | None]]:
    """Parse ``squeue -h -O`` :data:`SQUEUE_LOOKUP_FORMAT` into ``(job_id, comment)`` pairs."""
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        job_id, _, rest = line.partition("|")
        comment = rest[:-1] if rest.endswith("|") else rest
        rows.append((job_id.strip(), _clean(comment.strip())))
    return rows


_GRES_ITEM = re.compile(r"([^,(]+)(?:\([^)]*\))?")


def parse_gres(raw: str | None) -> dict[tuple[str, str | None], int]:
    """Parse ``Gres``/``GresUsed`` text such as ``gpu:a100:2(S:0-1),gpu:v100:1(IDX:0)``.

    Returns counts keyed by ``(name, type)``; an untyped entry has type None. Commas inside
    the parenthesised socket/index lists do not split entries.
    """
    counts: dict[tuple[str, str | None], int] = {}
    if not raw or raw in ("(null)", "N/A"):
        return counts
    for match in _GRES_ITEM.finditer(raw):
        item = match.group(1).strip().strip(",")
        if not item:
            continue
        parts = item.split(":")
        name = parts[0]
        gres_type: str | None = None
        count = 1
        if len(parts) >= 2 and parts[-1].isdigit():
            count = int(parts[-1])
            if len(parts) >= 3:
                gres_type = ":".join(parts[1:-1])
        elif len(parts) >= 2:
            gres_type = ":".join(parts[1:])
        key = (name, gres_type)
        counts[key] = counts.get(key, 0) + count
    return counts


SINFO_NODE_FORMAT = "NodeList:|,Partition:|,StateLong:|,CPUsState:|,Gres:|,GresUsed:|"

#: Base node states in which the scheduler starts new jobs.
_SCHEDULABLE_NODE_STATES = frozenset({"idle", "mixed", "allocated", "completing", "planned"})
#: State suffixes meaning the node is not responding, reserved for maintenance or rebooting.
_UNSCHEDULABLE_SUFFIXES = frozenset("*$@^")


def node_state_accepts_jobs(state: str) -> bool:
    """Whether a ``sinfo`` long node state (``idle``, ``mixed-``, ``down*``, ``idle~``) takes jobs.

    Powered-down cloud nodes (``~``) count as available: Slurm powers them up on demand.
    """
    state = state.strip().lower()
    base = state.rstrip("*~#!%$@^-+")
    suffixes = set(state[len(base) :])
    return base in _SCHEDULABLE_NODE_STATES and not (suffixes & _UNSCHEDULABLE_SUFFIXES)


def parse_sinfo_nodes(text: str) -> list[SlurmNodeGres]:
    """Parse ``sinfo -h -N -O`` :data:`SINFO_NODE_FORMAT`: one row per (node, partition)."""
    nodes = []
    for line in text.splitlines():
        if not line.strip():
            continue
        # Gres/GresUsed never contain "|", so splitting on it is unambiguous.
        parts = [p.strip() for p in line.split("|")]
        if len(parts) < 6:
            raise SlurmJobError(f"unexpected sinfo output line {line!r}: want {SINFO_NODE_FORMAT}")
        node, partition, state, cpus_state, gres, gres_used = parts[:6]
        cpu_fields = cpus_state.split("/")
        cpus_idle = int(cpu_fields[1]) if len(cpu_fields) == 4 and cpu_fields[1].isdigit() else None
        nodes.append(
            SlurmNodeGres(
                node=node,
                partition=partition.rstrip("*"),
                state=state,
                gres=parse_gres(gres),
                gres_used=parse_gres(gres_used),
                cpus_idle=cpus_idle,
                is_default_partition=partition.endswith("*"),
            )
        )
    return nodes


def job_id_sort_key(job_id: str) -> tuple[int, ...]:
    """Order ``12``, ``12_3`` (array task) and ``12+1`` (het job) ids numerically."""
    return tuple(int(part) for part in re.findall(r"\d+", job_id))


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


def build_sbatch_args(spec: SlurmJobSpec, *, partition: str | None, account: str | None) -> list[str]:
    """Arguments after ``sbatch`` for ``spec`` (the script itself goes on stdin or last)."""
    args = ["--parsable"]
    if spec.name:
        args.append(f"--job-name={spec.name}")
    if spec.comment:
        args.append(f"--comment={spec.comment}")
    if partition:
        args.append(f"--partition={partition}")
    if account:
        args.append(f"--account={account}")
    if spec.gpus:
        if spec.gpus < 0:
            raise SlurmJobError(f"gpus must be >= 0, got {spec.gpus}")
        gres = f"gpu:{spec.gpu_type}:{spec.gpus}" if spec.gpu_type else f"gpu:{spec.gpus}"
        args.append(f"--gres={gres}")
    if spec.cpus_per_task:
        args.append(f"--cpus-per-task={spec.cpus_per_task}")
    if spec.memory:
        args.append(f"--mem={spec.memory}")
    if spec.time_limit is not None:
        args.append(f"--time={format_time_limit(spec.time_limit)}")
    if spec.working_directory:
        args.append(f"--chdir={spec.working_directory}")
    if spec.output_path:
        args.append(f"--output={spec.output_path}")
    if spec.error_path:
        args.append(f"--error={spec.error_path}")
    # The job sees the environment sbatch runs with, which the hook builds from scratch.
    args.append("--export=ALL")
    args.extend(spec.extra_args)
    return args


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


def tail_lines(path: str | Path, lines: int) -> list[str] | None:
    """Last ``lines`` lines of a text file, or None when it cannot be read from here."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            # Read backwards in blocks so a huge job log costs only its tail.
            block, data = 8192, b""
            while size > 0 and data.count(b"\n") <= lines:
                step = min(block, size)
                size -= step
                fh.seek(size)
                data = fh.read(step) + data
    except OSError:
        return None
    return data.decode(errors="replace").splitlines()[-lines:] if lines > 0 else []


# --- slurmrestd (OpenAPI v0.0.38) request bodies and replies ---------------------------------

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


def expand_output_path(
    pattern: str | None, *, job_id: str, name: str, user: str | None, work_dir: str | None
) -> str:
    """Resolve an ``--output`` pattern as slurmd does for ``%j``, ``%x``, ``%u`` and ``%%``."""
    text = pattern or "slurm-%j.out"
    replacements = {"%j": job_id, "%x": name, "%u": user or "", "%%": "%"}
    text = re.sub(r"%[jxu%]", lambda m: replacements[m.group(0)], text)
    if not text.startswith("/") and work_dir:
        text = f"{work_dir.rstrip('/')}/{text}"
    return text


def job_info_from_rest(job: Mapping[str, Any]) -> SlurmJobInfo:
    """Build a :class:`SlurmJobInfo` from one entry of a ``/job/{id}`` or ``/jobs`` reply."""
    job_id = str(job["job_id"])
    state = SlurmJobState.parse(str(job["job_state"]))
    exit_code, sig = rest_wait_status(job.get("exit_code")) if state.is_terminal() else (None, None)
    name = str(job.get("name") or "")
    work_dir = _clean(job.get("current_working_directory") or None)
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
        reason=_clean(job.get("state_reason") or None),
        partition=_clean(job.get("partition") or None),
        nodes=_clean(job.get("nodes") or None),
        comment=_clean(job.get("comment") or None),
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
        err.get("error_number") == _REST_INVALID_JOB or err.get("error") == _INVALID_JOB
        for err in payload.get("errors") or []
    )


# --- hooks -----------------------------------------------------------------------------------


class SlurmRestClient:
    """
    Minimal slurmrestd client: the five calls the hooks need, sync and async.

    :param url: ``http(s)://host:port`` (JWT auth) or ``unix:/path/to/slurmrestd.sock`` (local
        auth: the socket's peer credentials identify the user).
    :param user: value of ``X-SLURM-USER-NAME``.
    :param token: JWT for ``X-SLURM-USER-TOKEN``; never logged.
    :param api_version: OpenAPI plug-in version in the paths, e.g. ``v0.0.38``.
    :param timeout: seconds per request.
    """

    def __init__(
        self,
        url: str,
        *,
        user: str | None = None,
        token: str | None = None,
        api_version: str = REST_API_VERSION,
        timeout: float = 60.0,
    ) -> None:
        if url.startswith("unix:"):
            self._socket: str | None = url.removeprefix("unix:").removeprefix("//")
            self.base_url = "http://slurmrestd"
        elif url.startswith(("http://", "https://")):
            self._socket = None
            self.base_url = url.rstrip("/")
        else:
            raise SlurmJobError(f"slurmrestd url {url!r} must start with http://, https:// or unix:")
        self.url = url
        self.api_version = api_version
        self.timeout = timeout
        self._headers = {"Accept": "application/json"}
        if token:
            self._headers["X-SLURM-USER-TOKEN"] = token
        if user:
            self._headers["X-SLURM-USER-NAME"] = user

    def path(self, suffix: str) -> str:
        return f"/slurm/{self.api_version}/{suffix}"

    def _client_args(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "headers": self._headers, "timeout": self.timeout}

    def _decode(self, method: str, suffix: str, response: httpx.Response) -> dict[str, Any]:
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            raise SlurmCommandError(
                [method, self.path(suffix)],
                response.status_code,
                response.text[:500],
                outcome=f"returned HTTP {response.status_code} without a JSON body",
            )
        if payload.get("errors") or response.status_code >= 400:
            error = SlurmCommandError(
                [method, self.path(suffix)],
                response.status_code,
                rest_error_text(payload) or response.text[:500],
                outcome=f"returned HTTP {response.status_code}",
            )
            error.payload = payload  # type: ignore[attr-defined]
            raise error
        return payload

    def request(self, method: str, suffix: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        transport = httpx.HTTPTransport(uds=self._socket) if self._socket else None
        try:
            with httpx.Client(transport=transport, **self._client_args()) as client:
                response = client.request(method, self.path(suffix), json=body)
        except httpx.HTTPError as err:
            raise SlurmCommandError([method, self.path(suffix)], None, str(err), outcome="failed") from err
        return self._decode(method, suffix, response)

    async def arequest(
        self, method: str, suffix: str, body: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        transport = httpx.AsyncHTTPTransport(uds=self._socket) if self._socket else None
        try:
            async with httpx.AsyncClient(transport=transport, **self._client_args()) as client:
                response = await client.request(method, self.path(suffix), json=body)
        except httpx.HTTPError as err:
            raise SlurmCommandError([method, self.path(suffix)], None, str(err), outcome="failed") from err
        return self._decode(method, suffix, response)


@dataclass(frozen=True)
class SlurmClusterSettings:
    """Where and how to reach the cluster, merged from hook arguments and the connection."""

    slurm_conf: str | None = None
    partition: str | None = None
    account: str | None = None
    rest_url: str | None = None
    rest_user: str | None = field(default=None, repr=False)
    rest_token: str | None = field(default=None, repr=False)
    rest_api_version: str = REST_API_VERSION

    def rest_client(self, timeout: float) -> SlurmRestClient | None:
        if not self.rest_url:
            return None
        return SlurmRestClient(
            self.rest_url,
            user=self.rest_user,
            token=self.rest_token,
            api_version=self.rest_api_version,
            timeout=timeout,
        )


class SlurmHookProtocol(Protocol):
    """The hook methods :class:`~nuro_ml.operators.slurm.SlurmJobOperator` needs."""

    def submit_job(self, spec: SlurmJobSpec) -> str: ...
    def find_job(self, job_id: str) -> SlurmJobInfo | None: ...
    def get_job(self, job_id: str) -> SlurmJobInfo: ...
    def find_jobs_by_name(self, name: str, comment: str | None = None) -> list[SlurmJobInfo]: ...
    def cancel_job(self, job_id: str) -> None: ...
    def read_output_tail(self, info: SlurmJobInfo, lines: int = 20) -> list[str] | None: ...


_CONNECTION_EXTRAS = frozenset({"slurm_conf", "partition", "account", "rest_url", "rest_api_version"})


class _SlurmHookBase(BaseHook):
    conn_name_attr = "slurm_conn_id"
    default_conn_name = "slurm_default"
    conn_type = "slurm"
    hook_name = "Slurm"

    def __init__(
        self,
        slurm_conn_id: str | None = default_conn_name,
        *,
        slurm_conf: str | None = None,
        partition: str | None = None,
        account: str | None = None,
        command_timeout: float = 60.0,
    ) -> None:
        super().__init__()
        self.slurm_conn_id = slurm_conn_id
        self._slurm_conf = slurm_conf
        self._partition = partition
        self._account = account
        self.command_timeout = command_timeout

    @classmethod
    def _default_connection(cls, conn_id: str, err: AirflowNotFoundException) -> Connection:
        # As the Kubernetes hook does: a missing *default* connection means "use the local
        # client configuration" (SLURM_CONF or /etc/slurm), any other missing id is an error.
        if conn_id == cls.default_conn_name:
            return Connection(conn_id=conn_id, conn_type=cls.conn_type)
        raise err

    def _merge(self, conn: Connection | None) -> SlurmClusterSettings:
        """Constructor arguments win over connection extras; CLI and slurmrestd exclude each other."""
        extras: dict[str, Any] = dict(conn.extra_dejson) if conn is not None else {}
        unknown = sorted(set(extras) - _CONNECTION_EXTRAS)
        if unknown:
            raise SlurmJobError(
                f"connection {self.slurm_conn_id!r}: unknown extra field(s) {', '.join(unknown)}; "
                f"allowed: {', '.join(sorted(_CONNECTION_EXTRAS))}"
            )
        slurm_conf = self._slurm_conf or extras.get("slurm_conf") or None
        rest_url = extras.get("rest_url") or None
        if slurm_conf and rest_url:
            raise SlurmJobError(
                f"connection {self.slurm_conn_id!r}: give either slurm_conf (Slurm commands) or "
                "rest_url (slurmrestd), not both"
            )
        if slurm_conf and not Path(slurm_conf).is_file():
            raise SlurmJobError(
                f"slurm.conf {slurm_conf} (from connection {self.slurm_conn_id!r} or hook argument) "
                "does not exist"
            )
        return SlurmClusterSettings(
            slurm_conf=slurm_conf,
            partition=self._partition or extras.get("partition") or None,
            account=self._account or extras.get("account") or None,
            rest_url=rest_url,
            rest_user=(conn.login or None) if conn is not None else None,
            rest_token=(conn.password or None) if conn is not None else None,
            rest_api_version=extras.get("rest_api_version") or REST_API_VERSION,
        )

    @staticmethod
    def _sbatch_argv(spec: SlurmJobSpec, partition: str | None, account: str | None) -> list[str]:
        argv = ["sbatch", *build_sbatch_args(spec, partition=partition, account=account)]
        if spec.script_path is not None:
            argv.append(spec.script_path)
        return argv

    @staticmethod
    def _scontrol_job_argv(job_id: str) -> list[str]:
        return ["scontrol", "show", "job", "-o", job_id]

    @staticmethod
    def _sacct_job_argv(job_id: str) -> list[str]:
        return ["sacct", "-X", "-n", "-P", "-j", job_id, "-o", ",".join(SACCT_FIELDS)]

    @staticmethod
    def _squeue_lookup_argv(name: str) -> list[str]:
        return ["squeue", "-h", "--states=all", f"--name={name}", "-O", SQUEUE_LOOKUP_FORMAT]

    @staticmethod
    def _sinfo_nodes_argv() -> list[str]:
        return ["sinfo", "-h", "-N", "-O", SINFO_NODE_FORMAT]

    @staticmethod
    def _accounting_from_config(config: str) -> bool:
        match = re.search(r"^AccountingStorageType\s*=\s*(\S+)", config, re.MULTILINE)
        return match is not None and match.group(1) != "accounting_storage/none"

    @staticmethod
    def _is_unknown_job(err: SlurmCommandError) -> bool:
        payload = getattr(err, "payload", None)
        return _INVALID_JOB in err.stderr or (payload is not None and rest_is_unknown_job(payload))

    @staticmethod
    def _pick(jobs: list[SlurmJobInfo], job_id: str) -> SlurmJobInfo | None:
        for job in jobs:
            if job.job_id == job_id:
                return job
        return jobs[0] if jobs else None

    @staticmethod
    def _matching(jobs: Sequence[Mapping[str, Any]], name: str, comment: str | None) -> list[SlurmJobInfo]:
        infos = [
            job_info_from_rest(job)
            for job in jobs
            if job.get("name") == name and (comment is None or (job.get("comment") or None) == comment)
        ]
        return sorted(infos, key=lambda info: job_id_sort_key(info.job_id))


class SlurmHook(_SlurmHookBase):
    """
    Submit, inspect and cancel Slurm jobs and read node GPU usage (blocking).

    Uses the Slurm commands with the cluster's ``slurm.conf``, or slurmrestd when the
    connection has a ``rest_url``.

    .. seealso::
        :ref:`Slurm connection <howto/connection:slurm>`

    :param slurm_conn_id: Airflow connection of type ``slurm``. Extras: ``slurm_conf`` (path of
        the cluster's slurm.conf on this machine), ``partition``, ``account``; or ``rest_url``
        (``https://host:6820`` with login = Slurm user and password = JWT, or
        ``unix:/path/slurmrestd.sock``) and ``rest_api_version`` (default ``v0.0.38``).
        A missing ``slurm_default`` connection means the local client configuration.
    :param slurm_conf: slurm.conf path; overrides the connection's ``slurm_conf``.
    :param partition: default partition for submitted jobs; overrides the connection's.
    :param account: default account for submitted jobs; overrides the connection's.
    :param command_timeout: seconds a single Slurm command or request may take.
    """

    @cached_property
    def connection(self) -> Connection | None:
        if not self.slurm_conn_id:
            return None
        try:
            return self.get_connection(self.slurm_conn_id)
        except AirflowNotFoundException as err:
            return self._default_connection(self.slurm_conn_id, err)

    @cached_property
    def settings(self) -> SlurmClusterSettings:
        return self._merge(self.connection)

    @cached_property
    def rest(self) -> SlurmRestClient | None:
        """The slurmrestd client, or None when this hook uses the Slurm commands."""
        return self.settings.rest_client(self.command_timeout)

    @property
    def slurm_conf(self) -> str | None:
        return self.settings.slurm_conf

    @property
    def partition(self) -> str | None:
        return self.settings.partition

    @property
    def account(self) -> str | None:
        return self.settings.account

    def get_conn(self) -> SlurmRestClient | None:
        return self.rest

    def run_command(
        self, argv: Sequence[str], *, stdin: str | None = None, environment: Mapping[str, str] | None = None
    ) -> str:
        """Run one Slurm command with this cluster's configuration; return stdout."""
        env = job_environment(environment or {}, self.slurm_conf)
        try:
            proc = subprocess.run(
                list(argv),
                input=stdin,
                env=env,
                capture_output=True,
                text=True,
                timeout=self.command_timeout,
                stdin=None if stdin is not None else subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as err:
            raw = err.stderr
            stderr = raw.decode(errors="replace") if isinstance(raw, bytes) else (raw or "")
            raise SlurmCommandError(list(argv), None, stderr) from err
        except FileNotFoundError as err:
            raise SlurmJobError(f"Slurm command {argv[0]!r} not found on PATH {env['PATH']}") from err
        if proc.returncode != 0:
            raise SlurmCommandError(list(argv), proc.returncode, proc.stderr)
        return proc.stdout

    def submit_job(self, spec: SlurmJobSpec) -> str:
        """Submit ``spec`` and return the new job id."""
        partition, account = spec.partition or self.partition, spec.account or self.account
        if self.rest is not None:
            reply = self.rest.request(
                "POST", "job/submit", rest_submit_body(spec, partition=partition, account=account)
            )
            job_id = str(reply["job_id"])
        else:
            script = batch_script_text(spec)
            argv = self._sbatch_argv(spec, partition, account)
            job_id = parse_sbatch_parsable(self.run_command(argv, stdin=script, environment=spec.environment))
        self.log.info("Submitted Slurm job %s (%s)", job_id, spec.name)
        return job_id

    @cached_property
    def accounting_enabled(self) -> bool:
        """Whether the cluster stores jobs in slurmdbd, so ``sacct`` knows finished jobs."""
        if self.rest is not None:
            return False
        return self._accounting_from_config(self.run_command(["scontrol", "show", "config"]))

    def find_job(self, job_id: str) -> SlurmJobInfo | None:
        """The job's current record, or None when neither slurmctld nor accounting knows it."""
        try:
            if self.rest is not None:
                reply = self.rest.request("GET", f"job/{job_id}")
                return self._pick([job_info_from_rest(j) for j in reply.get("jobs") or []], job_id)
            return self._pick(parse_scontrol_jobs(self.run_command(self._scontrol_job_argv(job_id))), job_id)
        except SlurmCommandError as err:
            if not self._is_unknown_job(err):
                raise
        if not self.accounting_enabled:
            return None
        return self._pick(parse_sacct_jobs(self.run_command(self._sacct_job_argv(job_id))), job_id)

    def get_job(self, job_id: str) -> SlurmJobInfo:
        """Like :meth:`find_job`, but an unknown job is an error."""
        info = self.find_job(job_id)
        if info is None:
            where = self.settings.rest_url or f"slurm.conf {self.slurm_conf or 'default'}"
            raise SlurmJobError(f"Slurm job {job_id} is not known to slurmctld ({where})")
        return info

    def find_jobs_by_name(self, name: str, comment: str | None = None) -> list[SlurmJobInfo]:
        """Jobs slurmctld still remembers with this name (and comment, if given), oldest first."""
        if self.rest is not None:
            return self._matching(self.rest.request("GET", "jobs").get("jobs") or [], name, comment)
        rows = parse_squeue_lookup(self.run_command(self._squeue_lookup_argv(name)))
        matching = {job_id for job_id, c in rows if comment is None or c == comment}
        jobs = [self.find_job(job_id) for job_id in sorted(matching, key=job_id_sort_key)]
        return [job for job in jobs if job is not None]

    def cancel_job(self, job_id: str) -> None:
        """Cancel the job; cancelling a finished or unknown job is not an error."""
        if self.rest is not None:
            try:
                self.rest.request("DELETE", f"job/{job_id}")
            except SlurmCommandError as err:
                if not self._is_unknown_job(err):
                    raise
        else:
            self.run_command(["scancel", job_id])
        self.log.info("Requested cancellation of Slurm job %s", job_id)

    def get_nodes(self) -> list[SlurmNodeGres]:
        """Every (node, partition) pair with its GRES configured and in use."""
        if self.rest is not None:
            return nodes_from_rest(self.rest.request("GET", "nodes").get("nodes") or [])
        return parse_sinfo_nodes(self.run_command(self._sinfo_nodes_argv()))

    def read_output_tail(self, info: SlurmJobInfo, lines: int = 20) -> list[str] | None:
        """Last lines of the job's stdout file, when this machine can read it."""
        if not info.stdout_path:
            return None
        return tail_lines(info.stdout_path, lines)


def _retry_transient() -> Any:
    # slurmctld can be briefly unreachable (restart, failover); a job lookup is safe to repeat.
    return tenacity.retry(
        stop=tenacity.stop_after_attempt(3),
        wait=tenacity.wait_exponential(multiplier=0.5, max=5),
        retry=tenacity.retry_if_exception(
            lambda e: isinstance(e, SlurmCommandError) and not _SlurmHookBase._is_unknown_job(e)
        ),
        reraise=True,
    )


class AsyncSlurmHook(_SlurmHookBase):
    """
    Asyncio twin of :class:`SlurmHook` for triggers: commands run as asyncio subprocesses and
    slurmrestd requests through an async HTTP client, so the event loop never blocks.

    :param slurm_conn_id: Airflow connection of type ``slurm`` (see :class:`SlurmHook`).
    :param slurm_conf: slurm.conf path; overrides the connection's ``slurm_conf``.
    :param partition: unused by reads, kept so both hooks take the same arguments.
    :param account: unused by reads, kept so both hooks take the same arguments.
    :param command_timeout: seconds a single Slurm command or request may take.
    """

    _settings: SlurmClusterSettings | None = None
    _accounting: bool | None = None

    async def get_settings(self) -> SlurmClusterSettings:
        if self._settings is None:
            conn: Connection | None = None
            if self.slurm_conn_id:
                try:
                    conn = await self.aget_connection(self.slurm_conn_id)
                except AirflowNotFoundException as err:
                    conn = self._default_connection(self.slurm_conn_id, err)
            self._settings = self._merge(conn)
        return self._settings

    async def _rest(self) -> SlurmRestClient | None:
        return (await self.get_settings()).rest_client(self.command_timeout)

    async def run_command(self, argv: Sequence[str]) -> str:
        """Run one Slurm command without blocking the event loop; return stdout."""
        env = job_environment({}, (await self.get_settings()).slurm_conf)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
        except FileNotFoundError as err:
            raise SlurmJobError(f"Slurm command {argv[0]!r} not found on PATH {env['PATH']}") from err
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=self.command_timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise SlurmCommandError(list(argv), None, "") from None
        if proc.returncode != 0:
            raise SlurmCommandError(list(argv), proc.returncode, stderr.decode(errors="replace"))
        return stdout.decode(errors="replace")

    async def accounting_enabled(self) -> bool:
        if self._accounting is None:
            if await self._rest() is not None:
                self._accounting = False
            else:
                self._accounting = self._accounting_from_config(
                    await self.run_command(["scontrol", "show", "config"])
                )
        return self._accounting

    @_retry_transient()
    async def find_job(self, job_id: str) -> SlurmJobInfo | None:
        """The job's current record, or None when neither slurmctld nor accounting knows it."""
        rest = await self._rest()
        try:
            if rest is not None:
                reply = await rest.arequest("GET", f"job/{job_id}")
                return self._pick([job_info_from_rest(j) for j in reply.get("jobs") or []], job_id)
            output = await self.run_command(self._scontrol_job_argv(job_id))
            return self._pick(parse_scontrol_jobs(output), job_id)
        except SlurmCommandError as err:
            if not self._is_unknown_job(err):
                raise
        if not await self.accounting_enabled():
            return None
        return self._pick(parse_sacct_jobs(await self.run_command(self._sacct_job_argv(job_id))), job_id)

    async def get_job(self, job_id: str) -> SlurmJobInfo:
        info = await self.find_job(job_id)
        if info is None:
            raise SlurmJobError(f"Slurm job {job_id} is not known to slurmctld")
        return info

    async def cancel_job(self, job_id: str) -> None:
        rest = await self._rest()
        if rest is not None:
            try:
                await rest.arequest("DELETE", f"job/{job_id}")
            except SlurmCommandError as err:
                if not self._is_unknown_job(err):
                    raise
        else:
            await self.run_command(["scancel", job_id])
        self.log.info("Requested cancellation of Slurm job %s", job_id)

    @_retry_transient()
    async def get_nodes(self) -> list[SlurmNodeGres]:
        rest = await self._rest()
        if rest is not None:
            return nodes_from_rest((await rest.arequest("GET", "nodes")).get("nodes") or [])
        return parse_sinfo_nodes(await self.run_command(self._sinfo_nodes_argv()))
