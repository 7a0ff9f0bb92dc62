"""The Slurm commands: their command lines, and running them blocking or as asyncio subprocesses.

Every command runs with an environment built from scratch (:func:`~nuro_ml.slurm.submit.job_environment`)
so ``SLURM_CONF`` selects the cluster and nothing else of the worker leaks into a job.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import Mapping, Sequence

from nuro_ml.exceptions import SlurmCommandError, SlurmJobError
from nuro_ml.slurm.models import SlurmJobSpec
from nuro_ml.slurm.parsing import SACCT_FIELDS, SINFO_NODE_FORMAT, SQUEUE_LOOKUP_FORMAT
from nuro_ml.slurm.submit import format_time_limit, job_environment

#: Prints the cluster configuration, read to learn whether accounting storage is on.
SHOW_CONFIG_ARGV: tuple[str, ...] = ("scontrol", "show", "config")


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
    if spec.nodelist:
        args.append(f"--nodelist={','.join(spec.nodelist)}")
        args.append(f"--nodes={len(spec.nodelist)}")
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


def sbatch_argv(spec: SlurmJobSpec, partition: str | None, account: str | None) -> list[str]:
    """The full ``sbatch`` command line; an inline script goes on stdin instead of the last argument."""
    argv = ["sbatch", *build_sbatch_args(spec, partition=partition, account=account)]
    if spec.script_path is not None:
        argv.append(spec.script_path)
    return argv


def scontrol_job_argv(job_id: str) -> list[str]:
    return ["scontrol", "show", "job", "-o", job_id]


def sacct_job_argv(job_id: str) -> list[str]:
    return ["sacct", "-X", "-n", "-P", "-j", job_id, "-o", ",".join(SACCT_FIELDS)]


def squeue_lookup_argv(name: str) -> list[str]:
    return ["squeue", "-h", "--states=all", f"--name={name}", "-O", SQUEUE_LOOKUP_FORMAT]


def scancel_argv(job_id: str) -> list[str]:
    return ["scancel", job_id]


def sinfo_nodes_argv() -> list[str]:
    return ["sinfo", "-h", "-N", "-O", SINFO_NODE_FORMAT]


def accounting_from_config(config: str) -> bool:
    """Whether ``scontrol show config`` output names an accounting storage other than none."""
    match = re.search(r"^AccountingStorageType\s*=\s*(\S+)", config, re.MULTILINE)
    return match is not None and match.group(1) != "accounting_storage/none"


def run_command(
    argv: Sequence[str],
    *,
    slurm_conf: str | None,
    timeout: float,
    stdin: str | None = None,
    environment: Mapping[str, str] | None = None,
) -> str:
    """Run one Slurm command against the cluster of ``slurm_conf``; return stdout.

    :param argv: the command line.
    :param slurm_conf: slurm.conf path (None: the worker's ``SLURM_CONF`` or the default).
    :param timeout: seconds the command may take.
    :param stdin: text sent on standard input (the batch script for ``sbatch``).
    :param environment: extra variables for the command (and for a job ``sbatch`` submits).
    """
    env = job_environment(environment or {}, slurm_conf)
    try:
        proc = subprocess.run(
            list(argv),
            input=stdin,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
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


async def arun_command(argv: Sequence[str], *, slurm_conf: str | None, timeout: float) -> str:
    """Like :func:`run_command` (without stdin), as an asyncio subprocess that never blocks the loop."""
    env = job_environment({}, slurm_conf)
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
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise SlurmCommandError(list(argv), None, "") from None
    if proc.returncode != 0:
        raise SlurmCommandError(list(argv), proc.returncode, stderr.decode(errors="replace"))
    return stdout.decode(errors="replace")
