"""Run a job on a Ray cluster through the Ray Jobs API and return its result."""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast

from airflow.sdk import BaseHook, BaseOperator, conf

from nuro_ml.capacity.pinning import LEASE_NODES_ENV, LeasePlacement, lease_from_xcom, ray_label_selector
from nuro_ml.exceptions import RayJobError
from nuro_ml.hooks.ray import RayHook, RayHookProtocol, RayJobInfo, RayJobStatus
from nuro_ml.links.ray import RAY_JOB_URL_XCOM_KEY, RAY_SUBMISSION_ID_XCOM_KEY, RayJobLink
from nuro_ml.task_key import RAY_ID, TaskKey, slug
from nuro_ml.triggers.ray import RayJobTrigger

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Connection, Context

#: The line a workload prints last to hand its result back (``NURO_ML_RESULT {"metrics": ...}``).
RESULT_MARKER = "NURO_ML_RESULT"
#: Ray job metadata keys recording which task instance (and which try) submitted the job.
TASK_INSTANCE_METADATA_KEY = "nuro_ml_task_instance"
TRY_NUMBER_METADATA_KEY = "airflow_try_number"
#: Environment variables every job gets (unless the runtime_env sets them): the submission id, and
#: the run key shared by all tries of a task instance (a workload can resume checkpoints under it).
SUBMISSION_ID_ENV = "NURO_ML_SUBMISSION_ID"
RUN_KEY_ENV = "NURO_ML_RUN_KEY"

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
#: Ray prefixes lines printed by tasks and actors with ``(Name pid=N, ip=...)``.
_RESULT_LINE = re.compile(r"^(?:\([^)]*\)\s+)?" + RESULT_MARKER + r"\s+(?P<json>\{.*\})\s*$")
_CONNECTION_FIELDS = ("login", "password", "host", "port", "schema", "uri")
_DIGEST_LENGTH = 12


def derive_submission_id(key: TaskKey) -> str:
    """The Ray submission id of a task instance's first job: ``<dag>-<task>[-<map index>]-<digest>``.

    The readable part is lower-cased, reduced to ``[a-z0-9_-]`` and cut to 64 characters; the 12
    hex digits of sha256 over the full task key make it unique, so every try of the task
    instance computes the same id, and different run ids never share one.
    """
    readable = slug(f"{key.dag_id}-{key.task_id}" + (f"-{key.map_index}" if key.mapped else ""), RAY_ID)
    return f"{readable}-{key.digest(_DIGEST_LENGTH)}" if readable else key.digest(_DIGEST_LENGTH)


def retry_submission_id(base: str, try_number: int) -> str:
    """Submission id used by try ``try_number`` when an earlier try's job ended unsuccessfully."""
    return base if try_number <= 1 else f"{base}-try{try_number}"


def submission_id_candidates(base: str, try_number: int) -> list[str]:
    """Ids the tries up to ``try_number`` may have submitted under, oldest first."""
    return [base] + [retry_submission_id(base, n) for n in range(2, max(try_number, 1) + 1)]


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def parse_result_line(logs: str) -> dict[str, Any] | None:
    """The JSON object of the last ``NURO_ML_RESULT <json>`` line in ``logs``, or None if there is none.

    :raises RayJobError: the last such line is not valid JSON.
    """
    for line in reversed(strip_ansi(logs).splitlines()):
        match = _RESULT_LINE.match(line.strip())
        if match is None:
            continue
        try:
            # The pattern only matches ``{...}``, so valid JSON here is always an object.
            return cast(dict[str, Any], json.loads(match.group("json")))
        except ValueError as err:
            raise RayJobError(f"malformed {RESULT_MARKER} line ({err}): {line[:300]}") from None
    return None


def log_tail(logs: str, lines: int) -> str:
    return "\n".join(strip_ansi(logs).rstrip("\n").splitlines()[-lines:]) if lines > 0 else ""


def resolve_connection_field(conn: Connection, field: str) -> str | None:
    """A connection attribute by name: login/password/host/port/schema/uri or ``extra.<key>``."""
    if field.startswith("extra."):
        value = conn.extra_dejson.get(field.removeprefix("extra."))
        return None if value is None else str(value)
    if field == "uri":
        return conn.get_uri()
    value = getattr(conn, field)
    return None if value is None else str(value)


def parse_connection_ref(ref: str) -> tuple[str, str]:
    """``conn_id`` (its password) or ``conn_id:field`` -> (conn_id, field)."""
    conn_id, sep, field = ref.rpartition(":")
    if sep and conn_id and (field in _CONNECTION_FIELDS or field.startswith("extra.")):
        return conn_id, field
    return ref, "password"


class RayJobOperator(BaseOperator):
    """
    Submit a job to a Ray cluster through the Ray Jobs API, wait for it, and return its result.

    The submission id is derived from the task instance (see :func:`derive_submission_id`), so
    a task that runs again finds its job instead of submitting it twice:

    * no job under the task instance's ids yet: submit under the base id;
    * the newest job is PENDING, RUNNING or SUCCEEDED: re-attach to it (a worker that died while
      the job ran, or after it finished, costs no second run);
    * the newest job FAILED or was STOPPED by an earlier try: submit a new job under
      ``<base id>-try<try_number>`` (earlier jobs and their logs stay untouched);
    * the newest job FAILED or was STOPPED in this same try: report that failure.

    A job found under one of these ids that another task instance submitted is never adopted.

    While the job runs its driver log is copied into the task log: in sync mode as it grows; in
    deferrable mode at the end, or every ``log_stream_interval`` seconds if set (the task then
    resumes on a worker briefly, prints the new lines and defers again). Killing the task stops
    the job. XCom: ``ray_submission_id`` and ``ray_job_url`` (the "Ray Job" extra link) are pushed
    before waiting. The return value is the JSON object of the last ``NURO_ML_RESULT <json>`` line
    in the job's log (by convention ``metrics`` and ``artifact_uri``), with ``submission_id``,
    ``status`` (``SUCCEEDED``) and ``job_url`` set by the operator (these three win over keys of
    the same name from the job). A FAILED or STOPPED job raises
    :class:`~nuro_ml.exceptions.RayJobError` with the job's last log lines.

    .. seealso::
        For more information on how to use this operator, take a look at the guide:
        :ref:`howto/operator:RayJobOperator`

    :param entrypoint: Shell command the job runs, from the ``working_dir`` if one is set. (templated)
    :param runtime_env: Ray runtime environment: ``working_dir`` (a local directory is uploaded),
        ``pip``, ``env_vars``, ``py_modules``... (templated)
    :param env_from_connections: Extra environment variables read from Airflow connections at run
        time, ``{"VAR": "conn_id"}`` (the password) or ``{"VAR": "conn_id:field"}`` with field
        ``login``, ``password``, ``host``, ``port``, ``schema``, ``uri`` or ``extra.<key>``. Values
        are masked in Airflow logs and never put in XCom; Ray itself keeps the runtime_env, so
        they are visible to whoever can read the Ray dashboard. (templated)
    :param submission_id: Base submission id; by default derived from (dag_id, run_id, task_id,
        map_index). (templated)
    :param metadata: String metadata stored with the job (the task instance is added). (templated)
    :param entrypoint_num_cpus: CPUs reserved for the entrypoint (driver) process.
    :param entrypoint_num_gpus: GPUs reserved for the entrypoint process.
    :param entrypoint_memory: Bytes of memory reserved for the entrypoint process.
    :param entrypoint_resources: Custom resources reserved for the entrypoint process. (templated)
    :param lease_task_id: task id of the GPU-capacity sensor whose lease the job runs under:
        the entrypoint is placed on the lease's nodes (label selector on Ray's
        ``ray.io/node-id``), and the job gets their node ids in ``NURO_ML_LEASE_NODES`` to
        place its own tasks and actors there. (templated)
    :param ray_conn_id: The :ref:`Ray connection <howto/connection:ray>` (dashboard address,
        auth headers, TLS); optional when ``address`` is given. (templated)
    :param address: Ray dashboard/Jobs API address (``http://127.0.0.1:8265``); beats the
        connection's host. (templated)
    :param poll_interval: Seconds between two status reads.
    :param log_stream_interval: Deferrable mode only: seconds between two log copies while the job
        runs; None copies the whole log once, at the end.
    :param log_tail_lines: Job log lines quoted in the error of a failed job.
    :param deferrable: Wait in the triggerer instead of a worker slot (default from
        ``[operators] default_deferrable``, True when unset).
    """

    template_fields: Sequence[str] = (
        "entrypoint",
        "runtime_env",
        "env_from_connections",
        "submission_id",
        "metadata",
        "entrypoint_resources",
        "lease_task_id",
        "ray_conn_id",
        "address",
    )
    template_fields_renderers = {"runtime_env": "json", "metadata": "json", "env_from_connections": "json"}
    operator_extra_links = (RayJobLink(),)
    ui_color = "#e5f2ff"

    def __init__(
        self,
        *,
        entrypoint: str,
        runtime_env: dict[str, Any] | None = None,
        env_from_connections: dict[str, str] | None = None,
        submission_id: str | None = None,
        metadata: dict[str, str] | None = None,
        entrypoint_num_cpus: float | None = None,
        entrypoint_num_gpus: float | None = None,
        entrypoint_memory: int | None = None,
        entrypoint_resources: dict[str, float] | None = None,
        lease_task_id: str | None = None,
        ray_conn_id: str | None = RayHook.default_conn_name,
        address: str | None = None,
        poll_interval: float = 5.0,
        log_stream_interval: float | None = None,
        log_tail_lines: int = 40,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=True),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.entrypoint = entrypoint
        self.runtime_env = runtime_env
        self.env_from_connections = env_from_connections
        self.submission_id = submission_id
        self.metadata = metadata
        self.entrypoint_num_cpus = entrypoint_num_cpus
        self.entrypoint_num_gpus = entrypoint_num_gpus
        self.entrypoint_memory = entrypoint_memory
        self.entrypoint_resources = entrypoint_resources
        self.lease_task_id = lease_task_id
        self._placement: LeasePlacement | None = None
        self.ray_conn_id = ray_conn_id
        self.address = address
        self.poll_interval = poll_interval
        self.log_stream_interval = log_stream_interval
        self.log_tail_lines = log_tail_lines
        self.deferrable = deferrable
        self._killed = False
        self._job_id: str | None = None

    @cached_property
    def hook(self) -> RayHookProtocol:
        return RayHook(self.ray_conn_id, address=self.address or None)

    def _refresh_cached_properties(self) -> None:
        self.__dict__.pop("hook", None)

    # -- request -------------------------------------------------------------------------

    def _secret_env(self) -> dict[str, str]:
        from airflow.sdk.log import mask_secret

        env: dict[str, str] = {}
        for var, ref in (self.env_from_connections or {}).items():
            conn_id, field = parse_connection_ref(ref)
            conn = BaseHook.get_connection(conn_id)
            value = resolve_connection_field(conn, field)
            if value is None:
                raise RayJobError(
                    f"task {self.task_id}: env_from_connections[{var!r}]: "
                    f"connection {conn_id!r} has no {field}"
                )
            mask_secret(value)
            env[var] = value
        return env

    def build_runtime_env(self, *, submission_id: str, run_key: str) -> tuple[dict[str, Any], set[str]]:
        """The runtime_env to submit, and the names of its secret environment variables."""
        runtime_env = copy.deepcopy(dict(self.runtime_env or {}))
        env_vars = runtime_env.get("env_vars") or {}
        if not isinstance(env_vars, Mapping):
            raise RayJobError(f"task {self.task_id}: runtime_env.env_vars must be a mapping of strings")
        env_vars = {str(k): str(v) for k, v in env_vars.items()}
        secrets = self._secret_env()
        env_vars.update(secrets)
        env_vars.setdefault(SUBMISSION_ID_ENV, submission_id)
        env_vars.setdefault(RUN_KEY_ENV, run_key)
        if self._placement is not None:
            env_vars[LEASE_NODES_ENV] = ",".join(self._placement.nodes)
        runtime_env["env_vars"] = env_vars
        return runtime_env, set(secrets)

    @staticmethod
    def redacted(runtime_env: dict[str, Any], secret_vars: set[str]) -> dict[str, Any]:
        shown = dict(runtime_env)
        shown["env_vars"] = {
            k: ("***" if k in secret_vars else v) for k, v in (runtime_env.get("env_vars") or {}).items()
        }
        return shown

    # -- execution -----------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        if self.lease_task_id:
            self._placement = lease_from_xcom(
                context["ti"].xcom_pull(task_ids=self.lease_task_id, key="lease"),
                source=f"task {self.task_id}",
            )
        info = self._attach_or_submit(context)
        submission_id = info.submission_id
        self._job_id = submission_id
        ti = context["ti"]
        ti.xcom_push(key=RAY_SUBMISSION_ID_XCOM_KEY, value=submission_id)
        ti.xcom_push(key=RAY_JOB_URL_XCOM_KEY, value=self.hook.job_url(submission_id))
        self.log.info("Ray job %s: %s", submission_id, self.hook.job_url(submission_id))
        if info.status.is_terminal():
            logs = self.hook.get_job_logs(submission_id)
            self._print_logs(logs, 0, final=True)
            return self._finish(info, logs)
        if self.deferrable:
            self._defer(submission_id, log_offset=0)
        return self._wait(submission_id)

    def _attach_or_submit(self, context: Context) -> RayJobInfo:
        ti = context["ti"]
        key = TaskKey.of(ti)
        try_number = int(getattr(ti, "try_number", 1) or 1)
        base = self.submission_id or derive_submission_id(key)

        latest: RayJobInfo | None = None
        for candidate in reversed(submission_id_candidates(base, try_number)):
            latest = self.hook.find_job(candidate)
            if latest is not None:
                break
        if latest is not None:
            self._check_owner(latest, key)
            same_try = latest.metadata.get(TRY_NUMBER_METADATA_KEY) == str(try_number)
            if not latest.status.is_unsuccessful_end() or same_try:
                self.log.info(
                    "Re-attaching to Ray job %s (%s), submitted by try %s",
                    latest.submission_id,
                    latest.status.value,
                    latest.metadata.get(TRY_NUMBER_METADATA_KEY, "?"),
                )
                return latest
            self.log.info(
                "Ray job %s of an earlier try ended %s; submitting a new one",
                latest.submission_id,
                latest.status.value,
            )
            submission_id = retry_submission_id(base, try_number)
        else:
            submission_id = base
        return self._submit(submission_id, run_key=base, key=key, try_number=try_number)

    def _check_owner(self, info: RayJobInfo, key: TaskKey) -> None:
        owner = info.metadata.get(TASK_INSTANCE_METADATA_KEY)
        if owner != key.format():
            raise RayJobError(
                f"Ray job {info.submission_id!r} on {self.hook.address} belongs to "
                f"{owner or 'a submission outside Airflow'}, not to task instance {key}; "
                "refusing to adopt it (set another submission_id)"
            )

    def _submit(self, submission_id: str, *, run_key: str, key: TaskKey, try_number: int) -> RayJobInfo:
        runtime_env, secret_vars = self.build_runtime_env(submission_id=submission_id, run_key=run_key)
        metadata = {str(k): str(v) for k, v in (self.metadata or {}).items()}
        metadata[TASK_INSTANCE_METADATA_KEY] = key.format()
        metadata[TRY_NUMBER_METADATA_KEY] = str(try_number)
        self.log.info(
            "Submitting Ray job %s to %s: %s (runtime_env %s)",
            submission_id,
            self.hook.address,
            self.entrypoint,
            json.dumps(self.redacted(runtime_env, secret_vars), sort_keys=True, default=str),
        )
        try:
            self.hook.submit_job(
                entrypoint=self.entrypoint,
                submission_id=submission_id,
                runtime_env=runtime_env,
                metadata=metadata,
                entrypoint_num_cpus=self.entrypoint_num_cpus,
                entrypoint_num_gpus=self.entrypoint_num_gpus,
                entrypoint_memory=self.entrypoint_memory,
                entrypoint_resources=self.entrypoint_resources,
                entrypoint_label_selector=(
                    ray_label_selector(self._placement) if self._placement is not None else None
                ),
            )
        except RayJobError:
            # Another process may have submitted the same id a moment ago: adopt it if it is ours.
            existing = self.hook.find_job(submission_id)
            if existing is None:
                raise
            self._check_owner(existing, key)
            self.log.info("Ray job %s was submitted concurrently; attaching to it", submission_id)
            return existing
        return self.hook.get_job_info(submission_id)

    def _wait(self, submission_id: str) -> Any:
        offset = 0
        while True:
            info = self.hook.get_job_info(submission_id)
            terminal = info.status.is_terminal()
            logs = self.hook.get_job_logs(submission_id)
            offset = self._print_logs(logs, offset, final=terminal)
            if terminal:
                return self._finish(info, logs)
            time.sleep(self.poll_interval)

    def _defer(self, submission_id: str, *, log_offset: int) -> None:
        self.defer(
            trigger=RayJobTrigger(
                submission_id=submission_id,
                ray_conn_id=self.ray_conn_id,
                address=self.address or None,
                poll_interval=self.poll_interval,
                yield_running_after=self.log_stream_interval,
                log_offset=log_offset,
            ),
            method_name="execute_complete",
            kwargs={"submission_id": submission_id, "log_offset": log_offset},
        )

    def execute_complete(
        self, context: Context, event: dict[str, Any], submission_id: str | None = None, log_offset: int = 0
    ) -> Any:
        """Resume after the trigger fired: print the logs, then finish, fail, or defer again."""
        submission_id = str(event.get("submission_id") or submission_id)
        log_offset = int(event.get("log_offset", log_offset))
        self._job_id = submission_id
        status = event.get("status")
        if status == "error":
            raise RayJobError(
                f"lost track of Ray job {submission_id} on {self.hook.address}: {event.get('message')}\n"
                f"{event.get('stack_trace', '')}"
            )
        logs = self.hook.get_job_logs(submission_id)
        offset = self._print_logs(logs, log_offset, final=status != "running")
        if status == "running":
            self._defer(submission_id, log_offset=offset)
        if status not in ("success", "failed"):
            raise RayJobError(f"unexpected event for Ray job {submission_id}: {status!r}")
        info = RayJobInfo(**event["job"])
        return self._finish(info, logs)

    def _print_logs(self, logs: str, offset: int, *, final: bool) -> int:
        """Copy the log lines after ``offset`` into the task log; returns the new offset.

        A line still being written (no newline yet) waits for the next call unless ``final``.
        """
        if offset > len(logs):
            # The log shrank (rotated or the job was replaced): start over rather than skip lines.
            offset = 0
        end = len(logs) if final else logs.rfind("\n", offset) + 1
        if end <= offset:
            return offset
        for line in strip_ansi(logs[offset:end]).splitlines():
            self.log.info("[ray] %s", line)
        return end

    def _finish(self, info: RayJobInfo, logs: str) -> dict[str, Any]:
        url = self.hook.job_url(info.submission_id)
        if info.status is RayJobStatus.SUCCEEDED:
            result = parse_result_line(logs)
            if result is None:
                self.log.warning("Ray job %s succeeded without a %s line", info.submission_id, RESULT_MARKER)
                result = {}
            else:
                self.log.info("Ray job %s succeeded; result keys: %s", info.submission_id, sorted(result))
            finished = {
                **result,
                "submission_id": info.submission_id,
                "status": info.status.value,
                "job_url": url,
            }
            self._lineage_result = finished
            return finished
        summary = (info.message or "").strip().splitlines()[0] if info.message else ""
        raise RayJobError(
            f"Ray job {info.submission_id} {info.status.value}"
            + (f" ({info.error_type})" if info.error_type else "")
            + f": {summary} [{url}]\n"
            + f"last {self.log_tail_lines} log lines:\n{log_tail(logs, self.log_tail_lines)}"
        )

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """Features in and model artifact out, as the job reported them (OpenLineage)."""
        from nuro_ml.lineage.training import ray_job_lineage

        return ray_job_lineage(self)

    def on_kill(self) -> None:
        self._killed = True
        if not self._job_id:
            return
        try:
            stopped = self.hook.stop_job(self._job_id)
        except Exception:
            self.log.exception("Failed to stop Ray job %s", self._job_id)
        else:
            self.log.info("Stop requested for Ray job %s (was running: %s)", self._job_id, stopped)
