"""Sensors on the telemetry stream: its committed watermark, and its health."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, conf

from nuro_ml.etl.stream_progress import StreamProgress, parse_time
from nuro_ml.exceptions import StreamError
from nuro_ml.triggers.stream import StreamHealthTrigger, StreamWatermarkTrigger, health

if TYPE_CHECKING:
    from airflow.sdk import Context


def _target(value: str | datetime) -> datetime:
    parsed = value if isinstance(value, datetime) else parse_time(str(value))
    if parsed is None:
        raise StreamError(f"StreamWatermarkSensor: target {value!r} is not a time")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class StreamWatermarkSensor(BaseSensorOperator):
    """
    Hold a batch run until the stream has committed data through the run's interval end.

    .. seealso::
        For more information on how to use it, take a look at the guide:
        :ref:`howto/sensor:StreamWatermarkSensor`

    The stream's committed event-time watermark (the lowest over ``queries``, from its progress
    record) must reach ``target``: from then on the stream accepts no row older than
    ``target``, so the run never reads a half-landed interval. Deferrable by default.

    :param state_dir: the stream's state folder. (templated)
    :param target: the time the watermark must reach; default the run's data interval end.
        (templated)
    :param queries: stream queries whose watermark counts; ``None``: every query with one.
    :param deferrable: wait in the triggerer instead of poking.
    :param poll_interval: seconds between two reads of the progress record.
    """

    template_fields: Sequence[str] = ("state_dir", "target")

    def __init__(
        self,
        *,
        state_dir: str,
        target: str | datetime = "{{ data_interval_end }}",
        queries: list[str] | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=True),
        poll_interval: float = 10.0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("poke_interval", poll_interval)
        super().__init__(**kwargs)
        self.state_dir = state_dir
        self.target = target
        self.queries = queries
        self.deferrable = deferrable
        self.poll_interval = poll_interval

    def _watermark(self) -> datetime | None:
        progress = StreamProgress.read(self.state_dir)
        return progress.watermark(self.queries) if progress is not None else None

    def poke(self, context: Context) -> bool:
        mark = self._watermark()
        target = _target(self.target)
        self.log.info(
            "Stream watermark %s, target %s", mark.isoformat() if mark else "not set", target.isoformat()
        )
        return mark is not None and mark >= target

    def execute(self, context: Context) -> Any:
        if not self.deferrable or self.poke(context):
            return super().execute(context)
        self.defer(
            trigger=StreamWatermarkTrigger(
                state_dir=self.state_dir,
                target=_target(self.target).isoformat(),
                queries=self.queries,
                poll_interval=self.poll_interval,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout) if self.timeout else None,
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> str:
        if event.get("status") != "success":
            raise StreamError(f"StreamWatermarkSensor on {self.state_dir}: {event.get('message')}")
        self.log.info("Stream watermark %s reached %s", event["watermark"], event["target"])
        return str(event["watermark"])


class StreamHealthSensor(BaseSensorOperator):
    """
    Watch the telemetry stream and finish when it stalls or dies, so the DAG can restart it.

    .. seealso::
        For more information on how to use it, take a look at the guide:
        :ref:`howto/sensor:StreamHealthSensor`

    The XCom return value is the trigger's event (``status`` ``dead`` or ``stalled`` and a
    ``message``). A healthy stream keeps the sensor waiting until its ``timeout`` (use
    ``soft_fail=True`` to skip the restart then). Deferrable by default.

    :param state_dir: the stream's state folder. (templated)
    :param stall_after: seconds without a committed batch or idle report that count as stalled.
    :param deferrable: wait in the triggerer instead of poking.
    :param poll_interval: seconds between two reads of the progress record.
    """

    template_fields: Sequence[str] = ("state_dir",)

    def __init__(
        self,
        *,
        state_dir: str,
        stall_after: float = 300.0,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=True),
        poll_interval: float = 10.0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("poke_interval", poll_interval)
        super().__init__(**kwargs)
        self.state_dir = state_dir
        self.stall_after = stall_after
        self.deferrable = deferrable
        self.poll_interval = poll_interval

    def poke(self, context: Context) -> Any:
        from airflow.sdk import PokeReturnValue

        verdict = health(StreamProgress.read(self.state_dir), self.stall_after, datetime.now(tz=UTC))
        if verdict is None:
            return False
        status, message = verdict
        self.log.warning("Telemetry stream is %s: %s", status, message)
        return PokeReturnValue(is_done=True, xcom_value={"status": status, "message": message})

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        verdict = health(StreamProgress.read(self.state_dir), self.stall_after, datetime.now(tz=UTC))
        if verdict is not None:
            return {"status": verdict[0], "message": verdict[1]}
        self.defer(
            trigger=StreamHealthTrigger(
                state_dir=self.state_dir, stall_after=self.stall_after, poll_interval=self.poll_interval
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout) if self.timeout else None,
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        if event.get("status") == "error":
            raise StreamError(f"StreamHealthSensor on {self.state_dir}: {event.get('message')}")
        self.log.warning("Telemetry stream is %s: %s", event["status"], event["message"])
        return {"status": event["status"], "message": event["message"]}
