"""``nuro_ml_stream_*`` series on the metrics endpoint, read from the stream's progress record."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from nuro_ml.etl.stream_progress import QueryProgress, StreamProgress
from nuro_ml.metrics import catalogue
from nuro_ml.metrics.stream import StreamCollector
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families


def scrape(state: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(StreamCollector(state))
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            assert set(sample.labels) <= catalogue.ALLOWED_LABELS, sample
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_without_a_record_only_stream_up_is_zero(tmp_path: Path) -> None:
    assert scrape(tmp_path) == {("nuro_ml_stream_up", ()): 0.0}


def test_freshness_commit_age_and_watermark_come_from_the_record(tmp_path: Path) -> None:
    import os

    committed = datetime.now(tz=UTC) - timedelta(seconds=30)
    StreamProgress(
        pid=os.getpid(),
        started_at=committed.isoformat(),
        checkpoint="c",
        output="o",
        queries={
            "telemetry": QueryProgress(
                id="q", run_id="r", committed_at=committed.isoformat(), watermark="2026-12-05T12:00:00.000Z"
            )
        },
        freshness={"p95_seconds": 2.5, "batch_p95_seconds": 1.5, "batch_max_seconds": 3.0, "samples": 10.0},
    ).write(tmp_path)
    got = scrape(tmp_path)
    assert got[("nuro_ml_stream_freshness_seconds", (("statistic", "p95"),))] == 2.5
    assert got[("nuro_ml_stream_freshness_seconds", (("statistic", "batch_p95"),))] == 1.5
    assert got[("nuro_ml_stream_freshness_seconds", (("statistic", "batch_max"),))] == 3.0
    assert 29 <= got[("nuro_ml_stream_last_commit_age_seconds", (("query", "telemetry"),))] < 120
    mark = datetime(2026, 12, 5, 12, tzinfo=UTC).timestamp()
    assert got[("nuro_ml_stream_watermark_timestamp_seconds", (("query", "telemetry"),))] == mark
    assert got[("nuro_ml_stream_up", ())] == 1.0
