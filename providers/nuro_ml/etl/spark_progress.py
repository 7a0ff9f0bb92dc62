"""Progress of the ETL's Spark pass: files done while Spark works, then rows per table.

Spark reports finished tasks to the driver as they end, so the driver follows the pass from a
watcher thread while ``collect`` blocks: by :class:`pyspark.StatusTracker` (the same numbers as
the Spark UI's stage page), or, where a task holds several files, by an accumulator that each task
adds its files to and that Spark merges as the task ends.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from nuro_ml.progress import DEFAULT_EVERY_S, Progress, format_rate, log_done

if TYPE_CHECKING:
    from pyspark import RDD, SparkContext

T = TypeVar("T")

_GROUP = "spark.jobGroup.id"


def completed_tasks(sc: SparkContext, group: str) -> int:
    """Tasks finished so far by the jobs of ``group`` (retried tasks count once they succeed)."""
    tracker = sc.statusTracker()
    done = 0
    for job_id in tracker.getJobIdsForGroup(group):
        job = tracker.getJobInfo(job_id)
        if job is None:
            continue
        for stage_id in job.stageIds:
            stage = tracker.getStageInfo(stage_id)
            if stage is not None:
                done += stage.numCompletedTasks
    return done


def collect_with_progress(
    rdd: RDD[T], progress: Progress, *, poll_s: float = 1.0, done: Callable[[], int] | None = None
) -> list[T]:
    """``rdd.collect()``, updating ``progress`` while it runs with ``done()``, by default the number
    of finished tasks; at the end, ``progress.done`` is the number of results.

    The jobs run in the caller's job group when it has one (so whoever cancels that group still
    cancels them), else in a group of their own.
    """
    sc = rdd.context
    previous = sc.getLocalProperty(_GROUP)
    group = previous or f"nuro-ml-{uuid.uuid4().hex}"
    if previous is None:
        sc.setJobGroup(group, progress.what)
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(poll_s):
            finished = done() if done is not None else completed_tasks(sc, group)
            if finished != progress.done:
                progress.update(finished)

    progress.update(0, force=True)
    watcher = threading.Thread(target=watch, name="etl-progress", daemon=True)
    watcher.start()
    try:
        result = rdd.collect()
    finally:
        stop.set()
        watcher.join()
        if previous is None:
            sc.setLocalProperty(_GROUP, None)  # type: ignore[arg-type]
    # The caller's final line reports the end; no extra line here.
    progress.done = len(result)
    return result


def file_progress(files: int, emit: Callable[[str], None] | None) -> Progress:
    """The progress of one pass over ``files`` drive logs."""
    return Progress("ETL files", files, unit="files", every_s=DEFAULT_EVERY_S, emit=emit)


def report_tables(files: Progress, reports: Iterable[Any], total_bytes: int) -> None:
    """Close the pass: files, bytes and their rates, then one line per table with its rows and rate.

    ``reports`` are the per-file results (``rows``: table -> rows written by that file).
    """
    rows: dict[str, int] = {}
    for report in reports:
        for table, n in (getattr(report, "rows", None) or {}).items():
            rows[table] = rows.get(table, 0) + n
    elapsed = files.elapsed
    mb = total_bytes / 1e6
    files.finish(read=f"{mb:.1f} MB ({format_rate(mb / elapsed, 'MB')})" if elapsed > 0 else f"{mb:.1f} MB")
    for table in sorted(rows):
        log_done(f"ETL table {table}", rows[table], elapsed, unit="rows", emit=files.emit)
