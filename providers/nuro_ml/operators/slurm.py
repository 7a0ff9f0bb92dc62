"""Operator that runs a batch script on a Slurm cluster and waits for it (deferrable)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from nuro_ml import settings
from nuro_ml.capacity.pinning import LeasePlacement, lease_from_xcom
from nuro_ml.exceptions import SlurmJobError
from nuro_ml.hooks.slurm import SlurmHook, SlurmHookProtocol, SlurmJobInfo, SlurmJobSpec
from nuro_ml.task_key import SLURM_NAME, TaskKey, digest, slug
from nuro_ml.triggers.slurm import SlurmJobTrigger

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context

#: XCom key holding the Slurm job id, pushed as soon as the job exists.
XCOM_JOB_ID = "slurm_job_id"

#: Prefix of the job comment that carries the task key.
COMMENT_PREFIX = "nuro-ml:"
_NAME_DIGEST_LENGTH = 12


def job_comment(key: TaskKey) -> str:
    """Stored as the job's comment: readable, and free of spaces, ``|`` and ``/`` in parts."""
    return COMMENT_PREFIX + key.quoted()


def job_name(key: TaskKey) -> str:
    """``<dag_id>.<task_id>.<digest>``: recognisable in squeue, distinct per task instance."""
    readable = slug(f"{key.dag_id}.{key.task_id}", SLURM_NAME)
    return f"{readable}.{digest(job_comment(key), _NAME_DIGEST_LENGTH)}"


class SlurmJobOperator(BaseOperator):
    """
    Submit a batch script to Slurm and wait until the job ends.

    The job is named after the task instance and carries its key (dag_id, run_id, task_id,
    map_index) as the Slurm comment, so a retried or restarted task re-attaches to a job
    that is still pending, running or has completed instead of submitting it again. A job
    of an earlier try that failed or was cancelled is left alone and a new one submitted.
    The job id goes to XCom (key ``slurm_job_id`` and the return value). On failure the
    error names the job, its state, exit code and reason, with the last lines of its output.

    .. seealso::
        :ref:`howto/operator:SlurmJobOperator`

    :param script: batch script text; ``#SBATCH`` lines allowed, a missing ``#!`` line means
        bash. Give this or ``script_path``. (templated)
    :param script_path: batch script file on the worker, submitted as is. (templated)
    :param slurm_conn_id: :ref:`Slurm connection <howto/connection:slurm>`. (templated)
    :param slurm_conf: slurm.conf path overriding the connection's. (templated)
    :param partition: partition to run in; default from the connection, else the cluster's
        default partition. (templated)
    :param account: account to charge; default from the connection. (templated)
    :param gpus: GPUs per node (``--gres=gpu:N``).
    :param gpu_type: GPU model for ``--gres=gpu:TYPE:N``, e.g. ``a100``. (templated)
    :param cpus_per_task: ``--cpus-per-task``.
    :param memory: ``--mem``, e.g. ``16G``. (templated)
    :param time_limit: ``--time``: minutes (int), a timedelta, or Slurm text such as
        ``2:00:00``. (templated)
    :param environment: variables for the job. The job sees these plus PATH, HOME, USER,
        LOGNAME, LANG, LC_ALL and TZ of the worker, never the worker's other variables. (templated)
    :param job_name: Slurm job name; default ``<dag_id>.<task_id>.<digest of the task
        instance key>``. (templated)
    :param working_directory: ``--chdir`` of the job; default ``<data dir>/slurm``, created on
        the worker. Use a path the compute nodes share with the worker. (templated)
    :param output_path: ``--output`` file, relative to ``working_directory`` unless absolute;
        default ``%x-%j.out`` (job name and id). stderr goes to the same file. (templated)
    :param extra_sbatch_args: further ``sbatch`` options, e.g. ``["--nodes=2"]``; not
        available through slurmrestd, where ``#SBATCH`` lines do the same. (templated)
    :param reattach_on_restart: look for this task instance's job before submitting. Slurm
        keeps ended jobs in slurmctld for ``MinJobAge`` (300 s by default), so a task
        cleared soon after its job completed re-attaches to it; pass False to always submit.
    :param deferrable: wait in the triggerer instead of holding a worker slot.
    :param poll_interval: seconds between two looks at the job.
    :param log_tail_lines: lines of job output logged on success and put into the error on
        failure.
    :param cancel_on_kill: cancel the job when the task is killed, also while deferred.
    :param lease_task_id: task id of the GPU-capacity sensor whose lease the job runs under:
        the job is pinned to the lease's nodes (``--nodelist``) with the GPUs it holds per
        node (``--gres=gpu:N``), so it runs where the gate counted it. (templated)
    """

    template_fields: Sequence[str] = (
        "script",
        "script_path",
        "slurm_conn_id",
        "slurm_conf",
        "partition",
        "account",
        "gpu_type",
        "memory",
        "time_limit",
        "environment",
        "job_name",
        "working_directory",
        "output_path",
        "extra_sbatch_args",
        "lease_task_id",
    )
    template_fields_renderers = {"script": "bash", "environment": "json"}
    ui_color = "#c9e1f5"

    def __init__(
        self,
        *,
        script: str | None = None,
        script_path: str | None = None,
        slurm_conn_id: str | None = SlurmHook.default_conn_name,
        slurm_conf: str | None = None,
        partition: str | None = None,
        account: str | None = None,
        gpus: int | None = None,
        gpu_type: str | None = None,
        cpus_per_task: int | None = None,
        memory: str | None = None,
        time_limit: int | str | timedelta | None = None,
        environment: Mapping[str, str] | None = None,
        job_name: str | None = None,
        working_directory: str | None = None,
        output_path: str | None = None,
        extra_sbatch_args: Sequence[str] | None = None,
        reattach_on_restart: bool = True,
        deferrable: bool = True,
        poll_interval: float = 5.0,
        log_tail_lines: int = 20,
        cancel_on_kill: bool = True,
        lease_task_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.lease_task_id = lease_task_id
        if (script is None) == (script_path is None):
            raise SlurmJobError(f"task {self.task_id}: give exactly one of script or script_path")
        if gpus is not None and gpus < 0:
            raise SlurmJobError(f"task {self.task_id}: gpus must be >= 0, got {gpus}")
        if poll_interval <= 0:
            raise SlurmJobError(f"task {self.task_id}: poll_interval must be > 0, got {poll_interval}")
        self.script = script
        self.script_path = script_path
        self.slurm_conn_id = slurm_conn_id
        self.slurm_conf = slurm_conf
        self.partition = partition
        self.account = account
        self.gpus = gpus
        self.gpu_type = gpu_type
        self.cpus_per_task = cpus_per_task
        self.memory = memory
        self.time_limit = time_limit
        self.environment = dict(environment or {})
        self.job_name = job_name
        self.working_directory = working_directory
        self.output_path = output_path
        self.extra_sbatch_args = list(extra_sbatch_args or [])
        self.reattach_on_restart = reattach_on_restart
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.log_tail_lines = log_tail_lines
        self.cancel_on_kill = cancel_on_kill
        self.job_id: str | None = None
        self._killed = False

    @cached_property
    def hook(self) -> SlurmHookProtocol:
        return SlurmHook(slurm_conn_id=self.slurm_conn_id, slurm_conf=self.slurm_conf)

    @staticmethod
    def task_key(context: Context) -> TaskKey:
        return TaskKey.of(context["ti"])

    def build_spec(self, key: TaskKey, placement: LeasePlacement | None = None) -> SlurmJobSpec:
        """The job this task instance submits; pinned to ``placement``'s nodes when given."""
        working_directory = self.working_directory
        if working_directory is None:
            default_dir = settings.data_dir() / "slurm"
            default_dir.mkdir(parents=True, exist_ok=True)
            working_directory = str(default_dir)
        return SlurmJobSpec(
            script=self.script,
            script_path=self.script_path,
            name=self.job_name or job_name(key),
            comment=job_comment(key),
            partition=self.partition,
            account=self.account,
            gpus=placement.gpus_per_node if placement is not None else self.gpus,
            gpu_type=self.gpu_type,
            nodelist=placement.nodes if placement is not None else (),
            cpus_per_task=self.cpus_per_task,
            memory=self.memory,
            time_limit=self.time_limit,
            environment=self.environment,
            working_directory=working_directory,
            output_path=self.output_path or "%x-%j.out",
            extra_args=tuple(self.extra_sbatch_args),
        )

    def find_previous_job(self, spec: SlurmJobSpec) -> SlurmJobInfo | None:
        """This task instance's newest job if it is still worth waiting for (or has succeeded)."""
        jobs = self.hook.find_jobs_by_name(spec.name or "", spec.comment)
        if not jobs:
            return None
        newest = jobs[-1]
        if newest.is_terminal and not newest.state.is_success():
            self.log.info("Earlier try's %s; submitting a new job", newest.describe())
            return None
        self.log.info("Re-attaching to %s, submitted by an earlier try", newest.describe())
        return newest

    def lease_placement(self, context: Context) -> LeasePlacement | None:
        if not self.lease_task_id:
            return None
        value = context["ti"].xcom_pull(task_ids=self.lease_task_id, key="lease")
        placement = lease_from_xcom(value, source=f"task {self.task_id}")
        if placement is not None:
            self.log.info(
                "Pinned to lease %s: nodes %s, %s GPU(s) per node",
                placement.lease_id,
                ",".join(placement.nodes),
                placement.gpus_per_node,
            )
        return placement

    def execute(self, context: Context) -> str:
        spec = self.build_spec(self.task_key(context), self.lease_placement(context))
        previous = self.find_previous_job(spec) if self.reattach_on_restart else None
        job_id = previous.job_id if previous else self.hook.submit_job(spec)
        self.job_id = job_id
        context["ti"].xcom_push(key=XCOM_JOB_ID, value=job_id)

        info = previous if previous is not None and previous.is_terminal else self.hook.get_job(job_id)
        if info.is_terminal:
            return self._complete(info)
        if self.deferrable:
            self.log.info("%s; deferring until it ends", info.describe())
            self.defer(
                trigger=SlurmJobTrigger(
                    job_id=job_id,
                    slurm_conn_id=self.slurm_conn_id,
                    slurm_conf=self.slurm_conf,
                    poll_interval=self.poll_interval,
                    cancel_on_kill=self.cancel_on_kill,
                ),
                method_name="execute_complete",
            )
        return self._wait(job_id)

    def _wait(self, job_id: str) -> str:
        state = None
        while True:
            info = self.hook.get_job(job_id)
            if info.is_terminal:
                return self._complete(info)
            if info.state != state:
                self.log.info("%s", info.describe())
                state = info.state
            time.sleep(self.poll_interval)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> str:
        """Resume after :class:`~nuro_ml.triggers.slurm.SlurmJobTrigger` fired."""
        self.job_id = str(event.get("job_id") or "")
        if event.get("status") == "error" or "job" not in event:
            raise SlurmJobError(f"Slurm job {self.job_id}: {event.get('message')}")
        return self._complete(SlurmJobInfo.from_dict(event["job"]))

    def _complete(self, info: SlurmJobInfo) -> str:
        if self.log_tail_lines <= 0:
            if info.state.is_success():
                self.log.info("%s", info.describe())
                return info.job_id
            raise SlurmJobError(info.describe())
        tail = self.hook.read_output_tail(info, self.log_tail_lines)
        if info.state.is_success():
            self.log.info("%s", info.describe())
            if tail:
                self.log.info("Last %d lines of %s:\n%s", len(tail), info.stdout_path, "\n".join(tail))
            return info.job_id
        if tail is None:
            output = f"output {info.stdout_path or '(unknown path)'} is not readable from this worker"
        elif not tail:
            output = f"output {info.stdout_path} is empty"
        else:
            output = f"last {len(tail)} lines of {info.stdout_path}:\n" + "\n".join(tail)
        raise SlurmJobError(f"{info.describe()}; {output}")

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """The declared inlets and outlets, and the Slurm job that ran (OpenLineage)."""
        from nuro_ml.lineage.training import slurm_job_lineage

        return slurm_job_lineage(self)

    def on_kill(self) -> None:
        self._killed = True
        if not self.job_id or not self.cancel_on_kill:
            return
        try:
            self.hook.cancel_job(self.job_id)
        except Exception:
            self.log.exception("Could not cancel Slurm job %s", self.job_id)
