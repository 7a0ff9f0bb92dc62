"""Operators that start and stop the telemetry stream (a long-lived Spark application)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from nuro_ml.etl.live_state import refresh_live_state
from nuro_ml.etl.stream_progress import StreamProgress
from nuro_ml.exceptions import StreamError
from nuro_ml.stream import launch as stream_launch
from nuro_ml.stream.job import StreamJobConfig
from nuro_ml.triggers.stream import health

if TYPE_CHECKING:
    from airflow.sdk import Context


def _config(config: dict[str, Any]) -> StreamJobConfig:
    try:
        return StreamJobConfig(**config)
    except (TypeError, ValueError) as err:
        raise StreamError(f"stream config is invalid: {err}") from err


class StartTelemetryStreamOperator(BaseOperator):
    """
    Make sure the telemetry stream runs: start it unless it already does.

    .. seealso::
        For more information on how to use it, take a look at the guide:
        :ref:`howto/operator:StartTelemetryStreamOperator`

    The stream (:mod:`nuro_ml.stream.job`) runs as its own long-lived Spark application, by
    default a detached local driver process (``master`` ``local[2]``), or with
    ``spark_submit`` set, submitted through ``spark-submit`` to the master in
    ``config["spark_conf"]`` / ``spark-defaults``. A stream found running is left alone
    (idempotent); a running stream that has stalled is replaced when ``restart_stalled``. A new
    driver resumes from the checkpoint, so nothing committed is read twice.

    Killing this task does not stop the stream; :class:`StopTelemetryStreamOperator` does.

    The XCom return value is ``{"pid", "app_id", "queries": {name: query id}, "checkpoint",
    "state_dir", "started": bool}``.

    :param config: the stream's :class:`~nuro_ml.stream.job.StreamJobConfig` fields
        (``output_path``, ``checkpoint_path``, ``state_dir``, ``landing_path``, ``redis_url``,
        ``feature_repo``, ...). (templated)
    :param restart_stalled: replace a driver that runs but has not made progress for
        ``stall_after`` seconds.
    :param stall_after: seconds without a committed batch or idle report that count as stalled.
    :param spark_submit: path of ``spark-submit`` to launch with instead of this interpreter.
    :param startup_timeout: seconds to wait for the new driver's queries to start.
    """

    template_fields: Sequence[str] = ("config",)
    template_fields_renderers = {"config": "json"}

    def __init__(
        self,
        *,
        config: dict[str, Any],
        restart_stalled: bool = True,
        stall_after: float = 300.0,
        spark_submit: str | None = None,
        startup_timeout: float = 600.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.restart_stalled = restart_stalled
        self.stall_after = stall_after
        self.spark_submit = spark_submit
        self.startup_timeout = startup_timeout

    def execute(self, context: Context) -> dict[str, Any]:
        from datetime import UTC, datetime

        config = dict(self.config)
        if self.spark_submit:
            # spark-submit's --master (or spark-defaults) decides; a master in the session would win.
            config.setdefault("master", None)
        cfg = _config(config)
        current = stream_launch.running(cfg.state_dir)
        if current is not None:
            progress = StreamProgress.read(cfg.state_dir)
            verdict = health(progress, self.stall_after, datetime.now(tz=UTC))
            if verdict is None or not self.restart_stalled:
                self.log.info("Telemetry stream already runs (driver pid %s); nothing to do", current.pid)
                return self._result(cfg, current.pid, progress, started=False)
            self.log.warning("Telemetry stream driver %s is %s: %s; restarting it", current.pid, *verdict)
            stream_launch.stop(cfg.state_dir)
        launch = stream_launch.start(cfg, spark_submit=self.spark_submit)
        self.log.info("Started telemetry stream driver pid %s; log %s", launch.pid, launch.log)
        try:
            progress = stream_launch.wait_started(launch, self._queries(cfg), self.startup_timeout)
        except stream_launch.StreamLaunchError as err:
            stream_launch.stop(cfg.state_dir, grace=10)
            raise StreamError(f"telemetry stream under {cfg.state_dir}: {err}") from err
        return self._result(cfg, launch.pid, progress, started=True)

    @staticmethod
    def _queries(cfg: StreamJobConfig) -> list[str]:
        from nuro_ml.etl.stream_tables import ONLINE_QUERY

        return cfg.sink_queries() + ([ONLINE_QUERY] if cfg.feature_repo else [])

    @staticmethod
    def _result(
        cfg: StreamJobConfig, pid: int, progress: StreamProgress | None, *, started: bool
    ) -> dict[str, Any]:
        return {
            "pid": pid,
            "app_id": progress.app_id if progress else None,
            "queries": {n: q.id for n, q in progress.queries.items()} if progress else {},
            "checkpoint": cfg.checkpoint_path,
            "state_dir": cfg.state_dir,
            "started": started,
        }


class StopTelemetryStreamOperator(BaseOperator):
    """
    Stop the telemetry stream: SIGTERM lets the driver stop its queries, SIGKILL after ``grace``.

    .. seealso::
        For more information on how to use it, take a look at the guide:
        :ref:`howto/operator:StopTelemetryStreamOperator`

    Idempotent: a stream that does not run is left as it is. The checkpoint stays, so the next
    start resumes where this one stopped.

    :param state_dir: the stream's state folder (``config["state_dir"]`` of the start
        operator). (templated)
    :param grace: seconds to wait for a clean stop before killing the driver.
    """

    template_fields: Sequence[str] = ("state_dir",)

    def __init__(self, *, state_dir: str, grace: float = 60.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.state_dir = state_dir
        self.grace = grace

    def execute(self, context: Context) -> dict[str, Any]:
        result = stream_launch.stop(self.state_dir, grace=self.grace)
        if result["stopped"]:
            self.log.info("Stopped telemetry stream driver %s (killed: %s)", result["pid"], result["killed"])
        else:
            self.log.info("Telemetry stream under %s does not run; nothing to stop", self.state_dir)
        return result


class RefreshLiveStateOperator(BaseOperator):
    """
    Rebuild the live view's offline table from the batch history and the stream's tail.

    .. seealso::
        For more information on how to use it, take a look at the guide:
        :ref:`howto/operator:RefreshLiveStateOperator`

    ``<output_path>/live_state`` (:mod:`nuro_ml.etl.live_state`) is the batch source of the
    ``vehicle_live_state`` feature view: ``vehicle_can`` batch partitions, the stream's rows
    dated after the batch's last date, and the stream's live records. Only the days whose input
    files changed since the last refresh are read and rewritten, so re-running it is cheap and
    ``feast materialize`` over unchanged days hits its cache.

    The XCom return value is ``{"rows", "inputs": {table: rows}, "batch_through", "written":
    [days], "unchanged": n, "removed": [days]}`` (``rows`` and ``inputs``: of the days read).

    :param output_path: the ETL output root holding the batch tables and ``stream/``.
        (templated)
    """

    template_fields: Sequence[str] = ("output_path",)

    def __init__(self, *, output_path: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.output_path = output_path

    def execute(self, context: Context) -> dict[str, object]:
        report = refresh_live_state(self.output_path)
        self.log.info(
            "Live state: %d rows, batch through %s; days written %s",
            report.rows,
            report.batch_through or "-",
            report.written or "none",
        )
        return report.to_xcom()
