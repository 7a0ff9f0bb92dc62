"""Sensor that waits for GPU capacity under team quotas and then holds a lease on it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout, AirflowSkipException
from pydantic import ValidationError

from nuro_ml.capacity.admission import admission_round, record_unreachable
from nuro_ml.capacity.backends.base import CapacityBackend, PoolCapacity, load_backend
from nuro_ml.capacity.ledger import QuotaLedger
from nuro_ml.capacity.policy import get_policy
from nuro_ml.capacity.reasons import ReasonLog, WaitRecord
from nuro_ml.capacity.records import LeaseRequest, RequestState, lease_key
from nuro_ml.exceptions import CapacityError, QuotaExceededError
from nuro_ml.task_key import TaskKey
from nuro_ml.triggers.gpu_capacity import GpuCapacityTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

#: The Airflow marker for "resumed because the trigger failed or timed out".
_TRIGGER_FAIL = "__fail__"


def _as_int(name: str, value: Any) -> int:
    """Templated numbers arrive as strings; accept integral values only."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise CapacityError(f"GpuCapacitySensor: {name} must be an integer, got {value!r}") from None
    if not number.is_integer():
        raise CapacityError(f"GpuCapacitySensor: {name} must be an integer, got {value!r}")
    return int(number)


class GpuCapacitySensor(BaseSensorOperator):
    """
    Wait until the team's quota and the cluster's free GPUs admit a job, then take a GPU lease.

    The request joins the ledger's queue; the admission policy (priorities, fair share across
    teams, borrowing of idle quota, backfill, gang admission, aging) decides when it goes in,
    and the lease is taken in one ledger transaction keyed by the task instance, so a retried
    task gets its own lease back. Deferrable by default: while waiting, the task occupies no
    worker slot, and one poller per back end in the triggerer serves every waiting task.
    Release the lease with :class:`~nuro_ml.operators.capacity.GpuLeaseReleaseOperator`,
    ideally as a teardown task.

    The lease id (``str``) is the XCom return value; the XCom key ``lease`` holds
    ``{"lease_id", "team", "pool", "gpus", "nodes", "expires_at"}``.

    .. seealso::
        For more information on how to use this sensor, take a look at the guide:
        :ref:`howto/sensor:GpuCapacitySensor`

    :param team: Team whose quota the GPUs count against. (templated)
    :param gpus: Total GPUs needed. (templated)
    :param pool: Ledger pool (GPU type) to take them from; stored as ``gpu_pool`` because
        ``pool`` on an Airflow operator names its Airflow pool. (templated)
    :param backend: Capacity back-end config, e.g. ``{"type": "ray", "address":
        "http://127.0.0.1:8265"}``; the back end's free GPUs cap what the ledger grants.
        ``None`` admits on the ledger's registered capacity alone. (templated)
    :param priority: Higher is admitted first (waiting raises it over time). (templated)
    :param ledger_url: SQLAlchemy URL of the quota ledger; ``None`` uses
        ``nuro_ml.settings.ledger_url()`` of the process that runs the check. (templated)
    :param nodes: Nodes the GPUs span (gang): all are admitted together or none. (templated)
    :param gpu_share: Milli-GPUs per GPU: 1000 (whole GPUs, the default) or a share of one
        GPU per node (MIG slice, MPS or time-slicing), e.g. 500 for half a GPU. (templated)
    :param gpu_model: GPU model the job needs (``A100``, ``A100|H100``), matched against the
        pool's nodes. (templated)
    :param lease_ttl: How long the lease lives without a heartbeat; also what backfill
        assumes as the job's longest run time. ``timedelta`` or seconds.
    :param policy: Admission policy: ``fair`` (default) or ``fifo``.
    :param deferrable: Wait in the triggerer (default ``True``) instead of poking.
    :param poke_interval: Seconds between admission checks.
    :param timeout: Seconds to wait before failing with ``AirflowSensorTimeout``
        (skipped instead with ``soft_fail=True``); the queued request is withdrawn.
    :param soft_fail: Skip the task instead of failing it on timeout or error.
    :param mode: ``poke`` or ``reschedule`` for the non-deferrable path.
    :param airflow_pool: Airflow pool (worker slots) for the task itself, if not the default.
    """

    template_fields: Sequence[str] = (
        "team",
        "gpus",
        "gpu_pool",
        "backend",
        "priority",
        "ledger_url",
        "nodes",
        "gpu_share",
        "gpu_model",
    )
    template_fields_renderers = {"backend": "json"}
    ui_color = "#d7eadf"

    def __init__(
        self,
        *,
        team: str,
        gpus: int | str,
        pool: str = "local",
        backend: dict[str, Any] | None = None,
        priority: int | str = 0,
        ledger_url: str | None = None,
        nodes: int | str = 1,
        gpu_share: int | str = 1000,
        gpu_model: str | None = None,
        lease_ttl: timedelta | float = timedelta(hours=12),
        policy: str = "fair",
        deferrable: bool = True,
        poke_interval: timedelta | float = 30.0,
        airflow_pool: str | None = None,
        **kwargs: Any,
    ) -> None:
        if airflow_pool is not None:
            kwargs["pool"] = airflow_pool
        super().__init__(poke_interval=poke_interval, **kwargs)
        self.team = team
        self.gpus = gpus
        self.gpu_pool = pool
        self.backend = backend
        self.priority = priority
        self.ledger_url = ledger_url
        self.nodes = nodes
        self.gpu_share = gpu_share
        self.gpu_model = gpu_model
        self.lease_ttl = lease_ttl.total_seconds() if isinstance(lease_ttl, timedelta) else float(lease_ttl)
        self.policy = get_policy(policy).name
        self.deferrable = deferrable
        self._request_key: str | None = None
        self._killed = False
        self._reason_log = ReasonLog()

    # -- helpers --------------------------------------------------------------------------

    def _ledger(self) -> QuotaLedger:
        ledger = QuotaLedger(self.ledger_url)
        if self.ledger_url:
            from sqlalchemy.engine import make_url

            password = make_url(self.ledger_url).password
            if password:
                from airflow.sdk.log import mask_secret

                mask_secret(str(password))
        return ledger

    def _key(self, context: Context) -> str:
        return lease_key(TaskKey.of(context["ti"]))

    def _request(self, key: str, deadline: datetime | None = None) -> LeaseRequest:
        return LeaseRequest(
            key=key,
            team=str(self.team),
            pool=str(self.gpu_pool),
            gpus=_as_int("gpus", self.gpus),
            nodes=_as_int("nodes", self.nodes),
            priority=_as_int("priority", self.priority),
            ttl_seconds=self.lease_ttl,
            poll_interval=float(self.poke_interval),
            deadline=deadline,
            gpu_share=_as_int("gpu_share", self.gpu_share),
            gpu_model=str(self.gpu_model) if self.gpu_model else None,
        )

    def _backend(self) -> CapacityBackend | None:
        if not self.backend:
            return None
        try:
            return load_backend(self.backend)
        except ValidationError as err:
            raise CapacityError(
                f"task {self.task_id}: invalid capacity backend config {self.backend!r}: {err}"
            ) from err

    def _capacities(self) -> list[PoolCapacity] | None:
        backend = self._backend()
        if backend is None or not self.backend:
            return None
        capacities = backend.get_capacity()
        if not any(c.pool == self.gpu_pool for c in capacities):
            self.log.warning(
                "Back end %s reports pools %s but not %s; admitting on the ledger's capacity alone",
                self.backend.get("type"),
                [c.pool for c in capacities],
                self.gpu_pool,
            )
        return capacities

    def _check_configured(self, ledger: QuotaLedger, request: LeaseRequest) -> None:
        pool = ledger.pool(request.pool)
        if pool is None:
            raise CapacityError(
                f"task {self.task_id}: pool {request.pool!r} is not registered in ledger {ledger.safe_url}; "
                f"register it (GpuQuotaOperator, QuotaLedger.upsert_pool or `nuro-ml quota set-pool`)"
            )
        if not any(q.team == request.team for q in ledger.quotas(request.pool)):
            raise QuotaExceededError(
                f"task {self.task_id}: team {request.team!r} has no quota in pool {request.pool!r} of ledger "
                f"{ledger.safe_url}; set one (GpuQuotaOperator or `nuro-ml quota set-quota`)"
            )

    def _lease_xcom(self, context: Context, lease_id: str) -> str:
        lease = self._ledger().lease(lease_id)
        if lease is None or not lease.active:
            raise CapacityError(
                f"task {self.task_id}: lease {lease_id} is "
                f"{'unknown' if lease is None else lease.state.value} in the ledger; it can no longer be used"
            )
        context["ti"].xcom_push(
            key="lease",
            value={
                "lease_id": lease.lease_id,
                "team": lease.team,
                "pool": lease.pool,
                "gpus": lease.gpus,
                "nodes": lease.nodes,
                "gpu_milli": lease.milli,
                "gpu_model": lease.gpu_model,
                # Where the gate counted the job: launchers pin it to these nodes and GPUs.
                "node_names": list(lease.node_names),
                "shares": [[s.node, s.gpu, s.milli] for s in lease.shares],
                "expires_at": lease.expires_at.isoformat(),
            },
        )
        self.log.info(
            "Holding lease %s: %s GPUs of pool %s for team %s (%s borrowed), expires %s",
            lease.lease_id,
            lease.gpus,
            lease.pool,
            lease.team,
            lease.borrowed,
            lease.expires_at.isoformat(),
        )
        return lease.lease_id

    def _log_reason(self, request: LeaseRequest, record: WaitRecord | None) -> None:
        """Log why the request waits when that changed since the last check."""
        if record is None or not self._reason_log.changed(request.key, record):
            return
        self.log.info(
            "Waiting for %s GPUs of pool %s [%s]: %s",
            request.gpus,
            request.pool,
            record.reason,
            record.message,
        )

    def _admit_once(self, context: Context, ledger: QuotaLedger, request: LeaseRequest) -> str | None:
        try:
            capacities = self._capacities()
        except CapacityError as err:
            self._log_reason(request, record_unreachable(ledger, [request], err)[request.key])
            raise
        result = admission_round(ledger, [request], capacities, self.policy)
        if request.key in result.leases:
            return self._lease_xcom(context, result.leases[request.key].lease_id)
        if request.key in result.failed:
            ledger.withdraw(request.key)
            raise QuotaExceededError(f"task {self.task_id}: {result.failed[request.key]}")
        record = result.reasons.get(request.key)
        if record is None:
            self.log.debug(
                "Waiting for %s GPUs of pool %s: %s",
                request.gpus,
                request.pool,
                result.waiting.get(request.key, "queued"),
            )
        self._log_reason(request, record)
        return None

    # -- execution ------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        key = self._request_key = self._key(context)
        ledger = self._ledger()
        request = self._request(key)
        self._check_configured(ledger, request)
        self._backend()

        held = ledger.active_lease(key)
        if held is not None:
            self.log.info("Task instance %s already holds lease %s; reusing it", key, held.lease_id)
            return self._lease_xcom(context, held.lease_id)

        waiting = ledger.waiting_request(key)
        deadline = (
            waiting.deadline
            if waiting is not None and waiting.deadline is not None
            else datetime.now(UTC) + timedelta(seconds=self.timeout)
        )
        request = self._request(key, deadline)
        ledger.enqueue(request)
        try:
            lease_id = self._admit_once(context, ledger, request)
        except QuotaExceededError:
            raise
        except CapacityError as err:
            if not self.deferrable:
                raise
            # A back end that does not answer yet (cluster still starting) is retried by
            # the trigger, which fails only if the back end keeps failing.
            self.log.warning("First capacity check failed, waiting in the triggerer: %s", err)
            lease_id = None
        if lease_id is not None:
            return lease_id

        if not self.deferrable:
            try:
                return super().execute(context)
            except (AirflowSensorTimeout, AirflowSkipException, AirflowFailException):
                # Timed out (or soft-failed): the wait is over, so is the place in the queue.
                ledger.withdraw(key, state=RequestState.TIMED_OUT)
                raise

        remaining = max(0.0, (deadline - datetime.now(UTC)).total_seconds())
        self.defer(
            trigger=GpuCapacityTrigger(
                request_key=key,
                team=request.team,
                pool=request.pool,
                gpus=request.gpus,
                nodes=request.nodes,
                priority=request.priority,
                backend=self.backend,
                ledger_url=self.ledger_url,
                lease_ttl=self.lease_ttl,
                poll_interval=float(self.poke_interval),
                deadline=deadline.isoformat(),
                policy=self.policy,
                gpu_share=request.gpu_share,
                gpu_model=request.gpu_model,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=remaining),
        )

    def poke(self, context: Context) -> bool | PokeReturnValue:
        key = self._request_key or self._key(context)
        self._request_key = key
        ledger = self._ledger()
        waiting = ledger.waiting_request(key)
        request = self._request(key, None if waiting is None else waiting.deadline)
        held = ledger.active_lease(key)
        if held is not None:
            return PokeReturnValue(True, self._lease_xcom(context, held.lease_id))
        if waiting is None:
            ledger.enqueue(request)
        lease_id = self._admit_once(context, ledger, request)
        return PokeReturnValue(lease_id is not None, lease_id)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> str:
        """Resume after the trigger fired: return the lease id or raise what went wrong."""
        status = event.get("status")
        key = event.get("request_key") or self._key(context)
        if status == "success":
            self.log.info(
                "%s (waited %.1f s in the triggerer)", event.get("message"), event.get("waited_seconds", 0)
            )
            return self._lease_xcom(context, str(event["lease_id"]))
        ledger = self._ledger()
        if status == "timeout":
            ledger.withdraw(key, state=RequestState.TIMED_OUT)
            raise AirflowSensorTimeout(f"task {self.task_id}: {event.get('message')}")
        ledger.withdraw(key)
        if status == "failed":
            raise QuotaExceededError(f"task {self.task_id}: {event.get('message')}")
        if event.get("stack_trace"):
            self.log.error("GPU capacity trigger failed:\n%s", event["stack_trace"])
        raise CapacityError(f"task {self.task_id}: GPU capacity trigger error: {event.get('message')}")

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        if next_method == _TRIGGER_FAIL:
            # The triggerer timed the wait out (or lost the trigger): leave the queue first.
            key = self._key(context)
            ledger = self._ledger()
            ledger.withdraw(key, state=RequestState.TIMED_OUT)
            held = ledger.active_lease(key)
            if held is not None:
                ledger.release(held.lease_id)
        return super().resume_execution(next_method, next_kwargs, context)

    def on_kill(self) -> None:
        """Leave the GPU queue and return a lease taken by this attempt."""
        self._killed = True
        if self._request_key is None:
            return
        try:
            lease = self._ledger().release_key(self._request_key)
            self.log.info(
                "Killed: withdrew GPU request %s%s",
                self._request_key,
                f" and released lease {lease.lease_id}" if lease is not None else "",
            )
        except CapacityError:
            self.log.exception("Killed: could not withdraw GPU request %s", self._request_key)
