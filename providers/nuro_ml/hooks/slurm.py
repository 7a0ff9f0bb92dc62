"""Hooks for Slurm: submit, inspect and cancel batch jobs, and read GPU (GRES) usage per node.

Two ways to reach a cluster, chosen by the ``slurm`` connection:

* the Slurm commands (``sbatch``, ``scontrol``, ``squeue``, ``sinfo``, ``sacct``, ``scancel``)
  with the cluster's ``slurm_conf``; they authenticate through munge on the machine they run on;
* slurmrestd at ``rest_url`` (OpenAPI ``v0.0.38``), with a JWT over HTTP(S) or local auth on a
  unix socket.

:class:`SlurmHook` is blocking and used by operators and the capacity back end;
:class:`AsyncSlurmHook` runs the same calls as asyncio subprocesses or async HTTP requests so a
trigger never blocks the triggerer's event loop. Both read the connection and hand the calls to
the Airflow-free clients of :mod:`nuro_ml.slurm.client`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Protocol

from airflow.sdk import BaseHook, Connection
from airflow.sdk.exceptions import AirflowNotFoundException

from nuro_ml.slurm.client import AsyncSlurmClient, SlurmClient, output_tail
from nuro_ml.slurm.connection import SlurmClusterSettings, merge_settings
from nuro_ml.slurm.models import SlurmJobInfo, SlurmJobSpec, SlurmNodeGres
from nuro_ml.slurm.rest_client import SlurmRestClient

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
    def client(self) -> SlurmClient:
        """The Airflow-free client for this connection."""
        return SlurmClient(self.settings, timeout=self.command_timeout)

    @property
    def rest(self) -> SlurmRestClient | None:
        """The slurmrestd client, or None when this hook uses the Slurm commands."""
        return self.client.rest

    @property
    def slurm_conf(self) -> str | None:
        return self.settings.slurm_conf

    @property
    def partition(self) -> str | None:
        return self.settings.partition

    @property
    def account(self) -> str | None:
        return self.settings.account

    def get_conn(self) -> SlurmClient:
        return self.client

    def run_command(
        self, argv: Sequence[str], *, stdin: str | None = None, environment: Mapping[str, str] | None = None
    ) -> str:
        """Run one Slurm command with this cluster's configuration; return stdout."""
        return self.client.run_command(argv, stdin=stdin, environment=environment)

    def submit_job(self, spec: SlurmJobSpec) -> str:
        """Submit ``spec`` and return the new job id."""
        job_id = self.client.submit_job(spec)
        self.log.info("Submitted Slurm job %s (%s)", job_id, spec.name)
        return job_id

    @property
    def accounting_enabled(self) -> bool:
        """Whether the cluster stores jobs in slurmdbd, so ``sacct`` knows finished jobs."""
        return self.client.accounting_enabled

    def find_job(self, job_id: str) -> SlurmJobInfo | None:
        """The job's current record, or None when neither slurmctld nor accounting knows it."""
        return self.client.find_job(job_id)

    def get_job(self, job_id: str) -> SlurmJobInfo:
        """Like :meth:`find_job`, but an unknown job is an error."""
        return self.client.get_job(job_id)

    def find_jobs_by_name(self, name: str, comment: str | None = None) -> list[SlurmJobInfo]:
        """Jobs slurmctld still remembers with this name (and comment, if given), oldest first."""
        return self.client.find_jobs_by_name(name, comment)

    def cancel_job(self, job_id: str) -> None:
        """Cancel the job; cancelling a finished or unknown job is not an error."""
        self.client.cancel_job(job_id)
        self.log.info("Requested cancellation of Slurm job %s", job_id)

    def get_nodes(self) -> list[SlurmNodeGres]:
        """Every (node, partition) pair with its GRES configured and in use."""
        return self.client.get_nodes()

    def read_output_tail(self, info: SlurmJobInfo, lines: int = 20) -> list[str] | None:
        """Last lines of the job's stdout file, when this machine can read it."""
        return output_tail(info, lines)


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
    _client: AsyncSlurmClient | None = None

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

    async def get_client(self) -> AsyncSlurmClient:
        """The Airflow-free client for this connection."""
        if self._client is None:
            self._client = AsyncSlurmClient(await self.get_settings(), timeout=self.command_timeout)
        return self._client

    async def run_command(self, argv: Sequence[str]) -> str:
        """Run one Slurm command without blocking the event loop; return stdout."""
        return await (await self.get_client()).run_command(argv)

    async def accounting_enabled(self) -> bool:
        return await (await self.get_client()).accounting_enabled()

    async def find_job(self, job_id: str) -> SlurmJobInfo | None:
        """The job's current record, or None when neither slurmctld nor accounting knows it."""
        return await (await self.get_client()).find_job(job_id)

    async def get_job(self, job_id: str) -> SlurmJobInfo:
        return await (await self.get_client()).get_job(job_id)

    async def cancel_job(self, job_id: str) -> None:
        await (await self.get_client()).cancel_job(job_id)
        self.log.info("Requested cancellation of Slurm job %s", job_id)

    async def get_nodes(self) -> list[SlurmNodeGres]:
        return await (await self.get_client()).get_nodes()
