"""What a person following an ETL run reads: files done with rate and ETA, then rows per table."""

from __future__ import annotations

import re
import time
from datetime import date

import pytest
from nuro_ml.etl.generator import generate_interval
from nuro_ml.etl.job import ETLJobConfig, run_etl
from nuro_ml.etl.spark_progress import collect_with_progress
from nuro_ml.progress import Progress

pytestmark = pytest.mark.integration


def _sleep_then_return(i: int) -> int:
    # Staggered task ends, so the watcher sees the stage part done.
    time.sleep(0.6 * i)
    return i


def test_watcher_reports_finished_tasks_with_rate_and_eta(spark_session) -> None:
    lines: list[str] = []
    progress = Progress("Spark tasks", 4, unit="tasks", every_s=0.0, emit=lines.append)
    rdd = spark_session.sparkContext.parallelize(range(4), 4).map(_sleep_then_return)
    assert collect_with_progress(rdd, progress, poll_s=0.1) == [0, 1, 2, 3]
    assert lines[0] == "Spark tasks: 0/4 tasks (0%), ETA ?"
    partial = [
        line
        for line in lines
        if re.match(r"Spark tasks: [123]/4 tasks \(\d+%\), [\d.,]+ tasks/\w+, ETA ", line)
    ]
    assert partial, lines
    assert progress.done == 4
    # The job group set for the watcher does not stick to the caller's later jobs.
    assert spark_session.sparkContext.getLocalProperty("spark.jobGroup.id") is None


def test_watcher_counts_the_files_of_tasks_that_hold_several(spark_session) -> None:
    # The job packs small files into one task: progress counts files, through an accumulator.
    sc = spark_session.sparkContext
    files_done = sc.accumulator(0)

    def process(group: list[int]) -> list[int]:
        time.sleep(0.6 * group[0])
        files_done.add(len(group))
        return group

    lines: list[str] = []
    progress = Progress("ETL files", 6, unit="files", every_s=0.0, emit=lines.append)
    rdd = sc.parallelize([[0, 1, 2], [3, 4, 5]], 2).flatMap(process)
    assert collect_with_progress(rdd, progress, poll_s=0.1, done=lambda: int(files_done.value)) == list(
        range(6)
    )
    assert any(re.match(r"ETL files: 3/6 files \(50%\)", line) for line in lines), lines
    assert progress.done == 6


def test_etl_run_logs_files_and_rows_per_table(spark_session, tmp_path) -> None:
    raw = tmp_path / "raw"
    generate_interval(
        raw,
        [date(2024, 3, 1)],
        ["veh-001", "veh-002", "veh-003"],
        drive_seconds=4,
        seed=3,
        lidar_points=64,
        image_bytes=512,
    )
    lines: list[str] = []
    cfg = ETLJobConfig(
        start="2024-03-01",
        end="2024-03-02",
        input_path=str(raw),
        output_path=str(tmp_path / "out"),
        quarantine_path=str(tmp_path / "quarantine"),
    )
    result = run_etl(spark_session, cfg, progress=lines.append)

    assert "ETL files: 0/3 files (0%), ETA ?" in lines
    final = next(line for line in lines if line.startswith("ETL files: 3/3 files (100%) in "))
    mb = result["bytes"] / 1e6
    assert re.fullmatch(
        r"ETL files: 3/3 files \(100%\) in [\d.hms]+, [\d.,]+ files/\w+, "
        + re.escape(f"read {mb:.1f} MB (")
        + r"[\d.,]+ MB/\w+\)",
        final,
    )
    tables = {
        m.group(1): int(m.group(2).replace(",", ""))
        for line in lines
        if (m := re.fullmatch(r"ETL table (\w+): ([\d,]+) rows in [\d.hms]+, [\d.,]+ rows/\w+", line))
    }
    assert tables == result["rows"]
