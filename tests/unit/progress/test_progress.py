"""The progress helper every long stage logs through: counts, rate, ETA, rate-limited lines."""

from __future__ import annotations

import pytest
from nuro_ml.progress import Progress, format_count, format_duration, format_rate, log_done


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _progress(total: int | None, **kwargs: object) -> tuple[Progress, list[str], Clock]:
    lines: list[str] = []
    clock = Clock()
    progress = Progress("Feature view trips", total, unit="rows", emit=lines.append, clock=clock, **kwargs)  # type: ignore[arg-type]
    return progress, lines, clock


def test_lines_show_count_share_rate_and_eta_and_are_rate_limited() -> None:
    progress, lines, clock = _progress(10_000, every_s=5.0)
    clock.now += 2.0
    progress.update(1_000)  # 2 s after the start: not logged, a short stage logs only its end
    clock.now += 3.0
    progress.update(2_500)
    clock.now += 2.0
    progress.update(3_500)  # 2 s after the last line: not logged
    clock.now += 3.0
    progress.update(5_000)
    clock.now += 2.0
    progress.finish(stale=12)
    assert lines == [
        "Feature view trips: 2,500/10,000 rows (25%), 500 rows/s, ETA 15s",
        "Feature view trips: 5,000/10,000 rows (50%), 500 rows/s, ETA 10s",
        # finish logs whatever the interval, with the elapsed time and no ETA
        "Feature view trips: 5,000/10,000 rows (50%) in 12s, 417 rows/s, stale 12",
    ]


def test_unknown_total_has_no_share_and_no_eta() -> None:
    progress, lines, clock = _progress(None, every_s=1.0)
    clock.now += 4.0
    progress.advance(12)
    progress.advance(8, force=True)
    assert lines == ["Feature view trips: 12 rows, 3.0 rows/s", "Feature view trips: 20 rows, 5.0 rows/s"]


def test_resumed_work_counts_in_done_but_not_in_the_rate() -> None:
    lines: list[str] = []
    clock = Clock()
    rounds = Progress("Boosting rounds", 100, unit="rounds", done=40, emit=lines.append, clock=clock)
    clock.now += 10.0
    rounds.update(50, valid_auc="0.9012")
    assert lines == ["Boosting rounds: 50/100 rounds (50%), 1.0 rounds/s, ETA 50s, valid auc 0.9012"]
    assert rounds.eta() == pytest.approx(50.0)


def test_no_rate_yet_gives_an_unknown_eta() -> None:
    progress, lines, _ = _progress(5)
    progress.update(0, force=True)
    assert lines == ["Feature view trips: 0/5 rows (0%), ETA ?"]


def test_the_total_can_arrive_later() -> None:
    progress, lines, clock = _progress(None)
    progress.set_total(8)
    clock.now += 1.0
    progress.update(2, force=True)
    assert lines == ["Feature view trips: 2/8 rows (25%), 2.0 rows/s, ETA 3.0s"]


def test_log_done_reports_work_measured_as_a_whole() -> None:
    lines: list[str] = []
    log_done("ETL table imu", 12_000, 4.0, unit="rows", emit=lines.append)
    assert lines == ["ETL table imu: 12,000 rows in 4.0s, 3,000 rows/s"]


def test_default_emit_goes_to_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="nuro_ml.progress")
    Progress("Terraform apply", 3, unit="resources").update(1, force=True)
    assert caplog.messages[-1].startswith("Terraform apply: 1/3 resources (33%)")


def test_negative_total_is_rejected_with_the_stage_name() -> None:
    with pytest.raises(ValueError, match=r"'ETL files'.*total must be >= 0"):
        Progress("ETL files", -1)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.42, "0.4s"), (12.4, "12s"), (185, "3m05s"), (7_620, "2h07m"), (float("inf"), "?"), (-1, "?")],
)
def test_durations(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (3.0, "3.0 rows/s"),
        (2.54, "2.5 rows/s"),
        (1234.4, "1,234 rows/s"),
        (0.04, "2.4 rows/min"),
        (0.003, "0.2 rows/min"),
        (0.001, "3.6 rows/h"),
        (0.0, "0.0 rows/h"),
    ],
)
def test_rates(value: float, text: str) -> None:
    assert format_rate(value, "rows") == text


def test_counts() -> None:
    assert format_count(1_234_567) == "1,234,567"
