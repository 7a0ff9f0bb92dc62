"""Operators around GPU leases: register pools and quotas, release a lease (teardown)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from nuro_ml.capacity.ledger import QuotaLedger
from nuro_ml.capacity.records import gpu_quantity, lease_key
from nuro_ml.exceptions import CapacityError
from nuro_ml.task_key import TaskKey

if TYPE_CHECKING:
    from airflow.sdk import Context

_NO_LEASE = ("", "None", "null")


def _int_or_none(where: str, field: str, value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise CapacityError(f"{where}: {field} must be an integer, got {value!r}") from None
    if not number.is_integer():
        raise CapacityError(f"{where}: {field} must be an integer, got {value!r}")
    return int(number)


def _gpus_or_none(where: str, field: str, value: Any) -> int | float | None:
    if value is None or value == "":
        return None
    return gpu_quantity(value, what=f"{where}: {field}")


class GpuQuotaOperator(BaseOperator):
    """
    Register GPU pools and team quotas in the ledger (idempotent: re-running changes nothing).

    Returns ``{"pools": [{"name", "capacity", "gpu_type"}], "quotas": [{"team", "pool",
    "nominal", "borrowing_limit", "lending_limit"}]}``.

    .. seealso::
        For more information on how to use this operator, take a look at the guide:
        :ref:`howto/operator:GpuQuotaOperator`

    :param pools: Pools to register, each ``{"name": ..., "capacity": ..., "gpu_type": ...}``;
        ``capacity`` may be a template rendering to an integer. (templated)
    :param quotas: Team quotas, each ``{"team": ..., "pool": ..., "nominal": ...,
        "borrowing_limit": ..., "lending_limit": ...}`` (limits optional); amounts in GPUs,
        fractional ones included (``2.5``), or milli-GPUs (``"2500m"``). (templated)
    :param ledger_url: Ledger URL; ``None`` uses ``nuro_ml.settings.ledger_url()``. (templated)
    """

    template_fields: Sequence[str] = ("pools", "quotas", "ledger_url")
    template_fields_renderers = {"pools": "json", "quotas": "json"}
    ui_color = "#d7eadf"

    def __init__(
        self,
        *,
        pools: Sequence[Mapping[str, Any]] = (),
        quotas: Sequence[Mapping[str, Any]] = (),
        ledger_url: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pools = pools
        self.quotas = quotas
        self.ledger_url = ledger_url

    def execute(self, context: Context) -> dict[str, list[dict[str, Any]]]:
        ledger = QuotaLedger(self.ledger_url)
        where = f"task {self.task_id}"
        pools_out: list[dict[str, Any]] = []
        # Validate everything before writing anything, so bad input leaves the ledger as it was.
        pools = []
        for index, spec in enumerate(self.pools):
            if "name" not in spec or "capacity" not in spec:
                raise CapacityError(
                    f"{where}: pools[{index}] needs 'name' and 'capacity', got {dict(spec)!r}"
                )
            capacity = _int_or_none(where, f"pools[{index}].capacity", spec["capacity"])
            pools.append((str(spec["name"]), capacity or 0, spec.get("gpu_type")))
        quotas = []
        for index, spec in enumerate(self.quotas):
            missing = [k for k in ("team", "pool", "nominal") if k not in spec]
            if missing:
                raise CapacityError(f"{where}: quotas[{index}] lacks {missing}, got {dict(spec)!r}")
            quotas.append(
                (
                    str(spec["team"]),
                    str(spec["pool"]),
                    _gpus_or_none(where, f"quotas[{index}].nominal", spec["nominal"]) or 0,
                    _gpus_or_none(where, f"quotas[{index}].borrowing_limit", spec.get("borrowing_limit")),
                    _gpus_or_none(where, f"quotas[{index}].lending_limit", spec.get("lending_limit")),
                )
            )
        for name, capacity, gpu_type in pools:
            pool = ledger.upsert_pool(name, capacity=capacity, gpu_type=gpu_type)
            self.log.info("Pool %s: %s GPUs (%s)", pool.name, pool.capacity, pool.gpu_type or "any type")
            pools_out.append({"name": pool.name, "capacity": pool.capacity, "gpu_type": pool.gpu_type})
        quotas_out: list[dict[str, Any]] = []
        for team, pool_name, nominal, borrowing, lending in quotas:
            quota = ledger.upsert_quota(
                team, pool_name, nominal=nominal, borrowing_limit=borrowing, lending_limit=lending
            )
            self.log.info(
                "Quota %s in %s: nominal %s, borrowing limit %s, lending limit %s",
                quota.team,
                quota.pool,
                quota.nominal,
                quota.borrowing_limit,
                quota.lending_limit,
            )
            quotas_out.append(
                {
                    "team": quota.team,
                    "pool": quota.pool,
                    "nominal": quota.nominal,
                    "borrowing_limit": quota.borrowing_limit,
                    "lending_limit": quota.lending_limit,
                }
            )
        return {"pools": pools_out, "quotas": quotas_out}


class GpuLeaseReleaseOperator(BaseOperator):
    """
    Release a GPU lease taken by :class:`~nuro_ml.sensors.gpu_capacity.GpuCapacitySensor`.

    Idempotent, so it fits a teardown task: releasing a lease that is already released or
    expired changes nothing, and a missing lease id (the sensor never got one) is not an
    error. With ``sensor_task_id`` it also finds the lease (and withdraws a queued request)
    of that sensor task in the same run when no lease id reached XCom. Logs and returns the
    GPU-hours the lease held: ``{"lease_id", "state", "team", "pool", "gpus",
    "held_seconds", "gpu_hours"}`` (``None`` when there was nothing to release).

    .. seealso::
        For more information on how to use this operator, take a look at the guide:
        :ref:`howto/operator:GpuLeaseReleaseOperator`

    :param lease_id: Lease to release, usually ``sensor.output``. (templated)
    :param ledger_url: Ledger URL; ``None`` uses ``nuro_ml.settings.ledger_url()``. (templated)
    :param sensor_task_id: Task id of the sensor whose lease (same run and map index) to
        release when ``lease_id`` is empty. (templated)
    """

    template_fields: Sequence[str] = ("lease_id", "ledger_url", "sensor_task_id")
    ui_color = "#d7eadf"

    def __init__(
        self,
        *,
        lease_id: str | None = None,
        ledger_url: str | None = None,
        sensor_task_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.lease_id = lease_id
        self.ledger_url = ledger_url
        self.sensor_task_id = sensor_task_id

    def execute(self, context: Context) -> dict[str, Any] | None:
        ledger = QuotaLedger(self.ledger_url)
        lease_id = None if self.lease_id is None or str(self.lease_id) in _NO_LEASE else str(self.lease_id)
        if lease_id is not None:
            lease = ledger.release(lease_id)
            if lease is None:
                self.log.warning(
                    "Lease %s is not in ledger %s; nothing to release", lease_id, ledger.safe_url
                )
                return None
        elif self.sensor_task_id:
            key = lease_key(TaskKey.of(context["ti"]).for_task(self.sensor_task_id))
            lease = ledger.release_key(key)
            if lease is None:
                self.log.info("Task %s holds no lease and waits for none; nothing to release", key)
                return None
        else:
            self.log.info("No lease id given (the sensor did not get one); nothing to release")
            return None

        now = datetime.now(UTC)
        held = lease.held_seconds(now)
        gpu_hours = lease.gpu_hours(now)
        self.log.info(
            "Lease %s is %s: team %s used %s GPUs of pool %s for %.1f s = %.4f GPU-hours",
            lease.lease_id,
            lease.state.value,
            lease.team,
            lease.gpus,
            lease.pool,
            held,
            gpu_hours,
        )
        return {
            "lease_id": lease.lease_id,
            "state": lease.state.value,
            "team": lease.team,
            "pool": lease.pool,
            "gpus": lease.gpus,
            "held_seconds": round(held, 3),
            "gpu_hours": round(gpu_hours, 6),
        }
