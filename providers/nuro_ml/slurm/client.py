"""Slurm jobs and nodes with no Airflow: submit, look up, cancel, read GRES per node.

A client reaches the cluster the way its ``SlurmClusterSettings`` say: the Slurm commands with
the cluster's ``slurm.conf`` (munge authenticates them on this machine), or slurmrestd at
``rest_url``. The hooks in :mod:`nuro_ml.hooks.slurm` build these
clients from the ``slurm`` connection.

Live jobs are read with ``scontrol show job -o`` (or ``GET /job/{id}``), which is authoritative
while slurmctld remembers the job (``MinJobAge``). With the commands, older jobs are read from
``sacct`` when the cluster has accounting storage; otherwise a forgotten job is not found.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any

import tenacity

from nuro_ml.exceptions import SlurmCommandError, SlurmJobError
from nuro_ml.slurm import cli
from nuro_ml.slurm.connection import SlurmClusterSettings
from nuro_ml.slurm.errors import is_unknown_job
from nuro_ml.slurm.models import SlurmJobInfo, SlurmJobSpec, SlurmNodeGres
from nuro_ml.slurm.nodes import aread_nodes, read_nodes
from nuro_ml.slurm.output import tail_lines
from nuro_ml.slurm.parsing import (
    job_id_sort_key,
    parse_sacct_jobs,
    parse_sbatch_parsable,
    parse_scontrol_jobs,
    parse_squeue_lookup,
)
from nuro_ml.slurm.rest import job_info_from_rest, rest_submit_body
from nuro_ml.slurm.rest_client import SlurmRestClient
from nuro_ml.slurm.submit import batch_script_text


def pick_job(jobs: Sequence[SlurmJobInfo], job_id: str) -> SlurmJobInfo | None:
    """The record of ``job_id`` among a lookup's answers (an array job answers with its tasks)."""
    for job in jobs:
        if job.job_id == job_id:
            return job
    return jobs[0] if jobs else None


def jobs_named(jobs: Sequence[Mapping[str, Any]], name: str, comment: str | None) -> list[SlurmJobInfo]:
    """slurmrestd job records with this name (and comment, if given), oldest first."""
    infos = [
        job_info_from_rest(job)
        for job in jobs
        if job.get("name") == name and (comment is None or (job.get("comment") or None) == comment)
    ]
    return sorted(infos, key=lambda info: job_id_sort_key(info.job_id))


def _unknown(settings: SlurmClusterSettings, job_id: str) -> SlurmJobError:
    where = settings.rest_url or f"slurm.conf {settings.slurm_conf or 'default'}"
    return SlurmJobError(f"Slurm job {job_id} is not known to slurmctld ({where})")


def output_tail(info: SlurmJobInfo, lines: int = 20) -> list[str] | None:
    """Last lines of the job's stdout file, when this machine can read it."""
    if not info.stdout_path:
        return None
    return tail_lines(info.stdout_path, lines)


class SlurmClient:
    """Blocking Slurm calls.

    :param settings: where and how to reach the cluster.
    :param timeout: seconds a single Slurm command or request may take.
    """

    def __init__(self, settings: SlurmClusterSettings, *, timeout: float = 60.0) -> None:
        self.settings = settings
        self.timeout = timeout

    @cached_property
    def rest(self) -> SlurmRestClient | None:
        """The slurmrestd client, or None when the Slurm commands are used."""
        return self.settings.rest_client(self.timeout)

    def run_command(
        self, argv: Sequence[str], *, stdin: str | None = None, environment: Mapping[str, str] | None = None
    ) -> str:
        """Run one Slurm command with this cluster's configuration; return stdout."""
        return cli.run_command(
            argv,
            slurm_conf=self.settings.slurm_conf,
            timeout=self.timeout,
            stdin=stdin,
            environment=environment,
        )

    def submit_job(self, spec: SlurmJobSpec) -> str:
        """Submit ``spec`` (partition and account default to the settings') and return its job id."""
        partition, account = spec.partition or self.settings.partition, spec.account or self.settings.account
        if self.rest is not None:
            reply = self.rest.request(
                "POST", "job/submit", rest_submit_body(spec, partition=partition, account=account)
            )
            return str(reply["job_id"])
        argv = cli.sbatch_argv(spec, partition, account)
        return parse_sbatch_parsable(
            self.run_command(argv, stdin=batch_script_text(spec), environment=spec.environment)
        )

    @cached_property
    def accounting_enabled(self) -> bool:
        """Whether the cluster stores jobs in slurmdbd, so ``sacct`` knows finished jobs."""
        if self.rest is not None:
            return False
        return cli.accounting_from_config(self.run_command(cli.SHOW_CONFIG_ARGV))

    def find_job(self, job_id: str) -> SlurmJobInfo | None:
        """The job's current record, or None when neither slurmctld nor accounting knows it."""
        try:
            if self.rest is not None:
                reply = self.rest.request("GET", f"job/{job_id}")
                return pick_job([job_info_from_rest(j) for j in reply.get("jobs") or []], job_id)
            return pick_job(parse_scontrol_jobs(self.run_command(cli.scontrol_job_argv(job_id))), job_id)
        except SlurmCommandError as err:
            if not is_unknown_job(err):
                raise
        if not self.accounting_enabled:
            return None
        return pick_job(parse_sacct_jobs(self.run_command(cli.sacct_job_argv(job_id))), job_id)

    def get_job(self, job_id: str) -> SlurmJobInfo:
        """Like :meth:`find_job`, but an unknown job is an error."""
        info = self.find_job(job_id)
        if info is None:
            raise _unknown(self.settings, job_id)
        return info

    def find_jobs_by_name(self, name: str, comment: str | None = None) -> list[SlurmJobInfo]:
        """Jobs slurmctld still remembers with this name (and comment, if given), oldest first."""
        if self.rest is not None:
            return jobs_named(self.rest.request("GET", "jobs").get("jobs") or [], name, comment)
        rows = parse_squeue_lookup(self.run_command(cli.squeue_lookup_argv(name)))
        matching = {job_id for job_id, c in rows if comment is None or c == comment}
        jobs = [self.find_job(job_id) for job_id in sorted(matching, key=job_id_sort_key)]
        return [job for job in jobs if job is not None]

    def cancel_job(self, job_id: str) -> None:
        """Cancel the job; cancelling a finished or unknown job is not an error."""
        if self.rest is None:
            self.run_command(cli.scancel_argv(job_id))
            return
        try:
            self.rest.request("DELETE", f"job/{job_id}")
        except SlurmCommandError as err:
            if not is_unknown_job(err):
                raise

    def get_nodes(self) -> list[SlurmNodeGres]:
        """Every (node, partition) pair with its GRES configured and in use."""
        return read_nodes(self.settings, timeout=self.timeout)


def _retry_transient() -> Any:
    # slurmctld can be briefly unreachable (restart, failover); a lookup is safe to repeat.
    return tenacity.retry(
        stop=tenacity.stop_after_attempt(3),
        wait=tenacity.wait_exponential(multiplier=0.5, max=5),
        retry=tenacity.retry_if_exception(
            lambda e: isinstance(e, SlurmCommandError) and not is_unknown_job(e)
        ),
        reraise=True,
    )


class AsyncSlurmClient:
    """Asyncio twin of :class:`SlurmClient` for triggers: commands run as asyncio subprocesses and
    slurmrestd requests go through an async HTTP client, so the event loop never blocks.

    :param settings: where and how to reach the cluster.
    :param timeout: seconds a single Slurm command or request may take.
    """

    def __init__(self, settings: SlurmClusterSettings, *, timeout: float = 60.0) -> None:
        self.settings = settings
        self.timeout = timeout
        self._accounting: bool | None = None

    @cached_property
    def rest(self) -> SlurmRestClient | None:
        """The slurmrestd client, or None when the Slurm commands are used."""
        return self.settings.rest_client(self.timeout)

    async def run_command(self, argv: Sequence[str]) -> str:
        """Run one Slurm command without blocking the event loop; return stdout."""
        return await cli.arun_command(argv, slurm_conf=self.settings.slurm_conf, timeout=self.timeout)

    async def accounting_enabled(self) -> bool:
        """Whether the cluster stores jobs in slurmdbd, so ``sacct`` knows finished jobs."""
        if self._accounting is None:
            if self.rest is not None:
                self._accounting = False
            else:
                self._accounting = cli.accounting_from_config(await self.run_command(cli.SHOW_CONFIG_ARGV))
        return self._accounting

    @_retry_transient()
    async def find_job(self, job_id: str) -> SlurmJobInfo | None:
        """The job's current record, or None when neither slurmctld nor accounting knows it."""
        try:
            if self.rest is not None:
                reply = await self.rest.arequest("GET", f"job/{job_id}")
                return pick_job([job_info_from_rest(j) for j in reply.get("jobs") or []], job_id)
            return pick_job(
                parse_scontrol_jobs(await self.run_command(cli.scontrol_job_argv(job_id))), job_id
            )
        except SlurmCommandError as err:
            if not is_unknown_job(err):
                raise
        if not await self.accounting_enabled():
            return None
        return pick_job(parse_sacct_jobs(await self.run_command(cli.sacct_job_argv(job_id))), job_id)

    async def get_job(self, job_id: str) -> SlurmJobInfo:
        """Like :meth:`find_job`, but an unknown job is an error."""
        info = await self.find_job(job_id)
        if info is None:
            raise _unknown(self.settings, job_id)
        return info

    async def cancel_job(self, job_id: str) -> None:
        """Cancel the job; cancelling a finished or unknown job is not an error."""
        if self.rest is None:
            await self.run_command(cli.scancel_argv(job_id))
            return
        try:
            await self.rest.arequest("DELETE", f"job/{job_id}")
        except SlurmCommandError as err:
            if not is_unknown_job(err):
                raise

    @_retry_transient()
    async def get_nodes(self) -> list[SlurmNodeGres]:
        """Every (node, partition) pair with its GRES configured and in use."""
        return await aread_nodes(self.settings, timeout=self.timeout)
