"""The telemetry stream's figures as Prometheus series, read from its progress record at scrape time."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from nuro_ml import settings
from nuro_ml.etl.stream_progress import StreamProgress, parse_time, pid_alive
from nuro_ml.metrics import catalogue as cat

log = logging.getLogger(__name__)

#: Progress-record freshness keys and the ``statistic`` label each is exported under.
_FRESHNESS = {"p95_seconds": "p95", "batch_p95_seconds": "batch_p95", "batch_max_seconds": "batch_max"}


def _gauge(series: cat.Series) -> Any:
    return GaugeMetricFamily(series.name, series.help, labels=series.labels)


class StreamCollector(Collector):
    """Freshness, commit age, watermark and liveness of the stream under ``state_dir``.

    :param state_dir: the stream's state folder; default ``settings.stream_dir() / "state"``
        (where the ``telemetry_stream`` DAG runs it). No record yet: only ``stream_up`` (0).
    """

    def __init__(self, state_dir: str | Path | None = None) -> None:
        self._state_dir = state_dir

    @property
    def state_dir(self) -> Path:
        return Path(self._state_dir) if self._state_dir is not None else settings.stream_dir() / "state"

    def describe(self) -> Iterable[Any]:
        return [_gauge(s) for s in cat.STREAM_SCRAPED]

    def collect(self) -> Iterator[Any]:
        up = _gauge(cat.STREAM_UP)
        try:
            progress = StreamProgress.read(self.state_dir)
        except ValueError:
            log.exception("Stream progress record under %s is unreadable", self.state_dir)
            progress = None
        up.add_metric([], 1.0 if progress is not None and pid_alive(progress.pid) else 0.0)
        if progress is not None:
            yield from self._families(progress)
        yield up

    @staticmethod
    def _families(progress: StreamProgress) -> Iterator[Any]:
        fresh = _gauge(cat.STREAM_FRESHNESS)
        for key, statistic in _FRESHNESS.items():
            if key in progress.freshness:
                fresh.add_metric([statistic], float(progress.freshness[key]))
        age = _gauge(cat.STREAM_COMMIT_AGE)
        mark = _gauge(cat.STREAM_WATERMARK)
        now = datetime.now(tz=UTC)
        for name, query in sorted(progress.queries.items()):
            committed = parse_time(query.committed_at)
            if committed is not None:
                age.add_metric([name], max((now - committed).total_seconds(), 0.0))
            watermark = parse_time(query.watermark)
            if watermark is not None and watermark.timestamp() > 0:
                mark.add_metric([name], watermark.timestamp())
        yield fresh
        yield age
        yield mark
