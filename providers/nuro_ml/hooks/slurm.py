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

from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any, Protocol

import tenacity
from airflow.sdk import BaseHook, Connection
from airflow.sdk.exceptions import AirflowNotFoundException

from nuro_ml.exceptions import SlurmCommandError, SlurmJobError
from nuro_ml.slurm import cli
from nuro_ml.slurm.connection import SlurmClusterSettings, merge_settings
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
from nuro_ml.slurm.rest import (
    job_info_from_rest,
    rest_submit_body,
)
from nuro_ml.slurm.rest_client import SlurmRestClient
from nuro_ml.slurm.submit import batch_script_text

# The records of the hooks' own signatures stay importable with them (operators, back ends and DAG
# authors do); parsers, request builders and the rest are imported from nuro_ml.slurm.
__all__ = [
    "AsyncSlurmHook",
    "SlurmHook",
    "SlurmHookProtocol",
    "SlurmJobInfo",
    "SlurmJobSpec",
    "SlurmNodeGres",
]


class SlurmHookProtocol(Protocol):
    """The hook methods :class:`~nuro_ml.operators.slurm.SlurmJobOperator` needs."""

    def submit_job(self, spec: SlurmJobSpec) -> str: ...
    def find_job(self, job_id: str) -> SlurmJobInfo | None: ...
    def get_job(self, job_id: str) -> SlurmJobInfo: ...
    def find_jobs_by_name(self, name: str, comment: str | None = None) -> list[SlurmJobInfo]: ...
    def cancel_job(self, job_id: str) -> None: ...
    def read_output_tail(self, info: SlurmJobInfo, lines: int = 20) -> list[str] | None: ...


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
        return merge_settings(
            conn,
            conn_id=self.slurm_conn_id,
            slurm_conf=self._slurm_conf,
            partition=self._partition,
            account=self._account,
        )

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
        return cli.run_command(
            argv,
            slurm_conf=self.slurm_conf,
            timeout=self.command_timeout,
            stdin=stdin,
            environment=environment,
        )

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
            argv = cli.sbatch_argv(spec, partition, account)
            job_id = parse_sbatch_parsable(self.run_command(argv, stdin=script, environment=spec.environment))
        self.log.info("Submitted Slurm job %s (%s)", job_id, spec.name)
        return job_id

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
                return self._pick([job_info_from_rest(j) for j in reply.get("jobs") or []], job_id)
            return self._pick(parse_scontrol_jobs(self.run_command(cli.scontrol_job_argv(job_id))), job_id)
        except SlurmCommandError as err:
            if not is_unknown_job(err):
                raise
        if not self.accounting_enabled:
            return None
        return self._pick(parse_sacct_jobs(self.run_command(cli.sacct_job_argv(job_id))), job_id)

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
        rows = parse_squeue_lookup(self.run_command(cli.squeue_lookup_argv(name)))
        matching = {job_id for job_id, c in rows if comment is None or c == comment}
        jobs = [self.find_job(job_id) for job_id in sorted(matching, key=job_id_sort_key)]
        return [job for job in jobs if job is not None]

    def cancel_job(self, job_id: str) -> None:
        """Cancel the job; cancelling a finished or unknown job is not an error."""
        if self.rest is not None:
            try:
                self.rest.request("DELETE", f"job/{job_id}")
            except SlurmCommandError as err:
                if not is_unknown_job(err):
                    raise
        else:
            self.run_command(cli.scancel_argv(job_id))
        self.log.info("Requested cancellation of Slurm job %s", job_id)

    def get_nodes(self) -> list[SlurmNodeGres]:
        """Every (node, partition) pair with its GRES configured and in use."""
        return read_nodes(self.settings, timeout=self.command_timeout)

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
            lambda e: isinstance(e, SlurmCommandError) and not is_unknown_job(e)
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
        settings = await self.get_settings()
        return await cli.arun_command(argv, slurm_conf=settings.slurm_conf, timeout=self.command_timeout)

    async def accounting_enabled(self) -> bool:
        if self._accounting is None:
            if await self._rest() is not None:
                self._accounting = False
            else:
                self._accounting = cli.accounting_from_config(await self.run_command(cli.SHOW_CONFIG_ARGV))
        return self._accounting

    @_retry_transient()
    async def find_job(self, job_id: str) -> SlurmJobInfo | None:
        """The job's current record, or None when neither slurmctld nor accounting knows it."""
        rest = await self._rest()
        try:
            if rest is not None:
                reply = await rest.arequest("GET", f"job/{job_id}")
                return self._pick([job_info_from_rest(j) for j in reply.get("jobs") or []], job_id)
            output = await self.run_command(cli.scontrol_job_argv(job_id))
            return self._pick(parse_scontrol_jobs(output), job_id)
        except SlurmCommandError as err:
            if not is_unknown_job(err):
                raise
        if not await self.accounting_enabled():
            return None
        return self._pick(parse_sacct_jobs(await self.run_command(cli.sacct_job_argv(job_id))), job_id)

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
                if not is_unknown_job(err):
                    raise
        else:
            await self.run_command(cli.scancel_argv(job_id))
        self.log.info("Requested cancellation of Slurm job %s", job_id)

    @_retry_transient()
    async def get_nodes(self) -> list[SlurmNodeGres]:
        return await aread_nodes(await self.get_settings(), timeout=self.command_timeout)
