"""Progress lines a person can follow: done/total, rate and ETA, at most one line every few seconds.

One helper for every long stage (ETL files and tables, feature materialization, training rounds,
Terraform resources). It depends on the standard library only, so Spark executors, Ray workers and
the training workloads use it as well as the operators::

    progress = Progress("Feature view trips -> redis", total=rows, unit="rows")
    for batch in batches:
        ...
        progress.advance(len(batch))
    progress.finish()

reads in the log as::

    Feature view trips -> redis: 40,000/100,000 rows (40%), 8,000 rows/s, ETA 7.5s
    Feature view trips -> redis: 100,000/100,000 rows (100%) in 12s, 8,333 rows/s

The rate is the average since the stage started (work done before, such as rounds restored from a
checkpoint, is counted in ``done`` but not in the rate), so the ETA is steady rather than jumpy.
Lines are rate-limited by ``every_s`` (the first one comes ``every_s`` after the start, so a short
stage logs one line); :meth:`Progress.finish` and ``force=True`` always log.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

#: Seconds between two progress lines of one stage, unless the caller asks otherwise.
DEFAULT_EVERY_S = 10.0


def format_duration(seconds: float) -> str:
    """``0.4s``, ``12s``, ``3m05s``, ``2h07m``: short enough for a log line, exact enough for an ETA."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def format_count(value: int) -> str:
    """A count with thousands separators."""
    return f"{value:,}"


def format_rate(per_second: float, unit: str) -> str:
    """``8,333 rows/s``, ``2.5 rounds/s``; below one per second per minute (``0.6 resources/min``)
    and below 0.1 per minute per hour, so slow stages never read as ``0.0/s``."""
    if not math.isfinite(per_second):
        return f"? {unit}/s"
    for scale, suffix, least in ((1, "s", 1.0), (60, "min", 0.1), (3600, "h", 0.0)):
        value = per_second * scale
        if abs(value) >= least:
            return f"{value:.1f} {unit}/{suffix}" if abs(value) < 10 else f"{round(value):,} {unit}/{suffix}"
    raise AssertionError("unreachable")


class Progress:
    """Rate-limited progress of one stage.

    :param what: names the stage and its subject, e.g. ``"ETL files"`` or ``"Feature view trips"``;
        each line starts with it.
    :param total: how many units the stage will do; ``None`` when unknown (no percentage, no ETA).
    :param unit: what is counted, plural (``rows``, ``files``, ``rounds``, ``resources``).
    :param done: units already done before this stage started (a resumed run); shown in the count
        but not in the rate.
    :param every_s: least seconds between two lines; updates in between are not logged.
    :param emit: where a line goes; default: ``logging.info`` on this module's logger. Ray workers
        pass ``print`` so their lines reach the job log.
    :param clock: monotonic seconds; replaceable so a test can drive time.
    """

    def __init__(
        self,
        what: str,
        total: int | None = None,
        *,
        unit: str = "items",
        done: int = 0,
        every_s: float = DEFAULT_EVERY_S,
        emit: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if total is not None and total < 0:
            raise ValueError(f"progress of {what!r}: total must be >= 0, got {total}")
        self.what = what
        self.total = total
        self.unit = unit
        self.every_s = every_s
        self.emit: Callable[[str], None] = emit or (lambda line: log.info("%s", line))
        self._clock = clock
        self.started = clock()
        self.initial = done
        self.done = done
        # The first line comes ``every_s`` after the start: a stage shorter than that logs only
        # its final line.
        self._last_emit = self.started
        self._details: dict[str, str] = {}
        self.finished = False

    # ------------------------------------------------------------------------------------- updates
    def update(
        self, done: int, *, force: bool = False, details: Mapping[str, object] | None = None, **more: object
    ) -> None:
        """Set the count done so far; ``details`` and ``more`` (``name=value``, latest wins) follow
        the rate in each line, e.g. the latest validation loss."""
        self.done = done
        self._set_details({**(details or {}), **more})
        self._maybe_emit(force)

    def advance(self, n: int = 1, *, force: bool = False, **details: object) -> None:
        """Add ``n`` units done."""
        self.update(self.done + n, force=force, details=details)

    def set_total(self, total: int | None) -> None:
        """The total became known (or changed), e.g. once a plan listed its resources."""
        self.total = total

    def finish(self, **details: object) -> None:
        """Log the final line (always), with the elapsed time and the average rate."""
        self._set_details(details)
        self.finished = True
        self._last_emit = self._clock()
        self.emit(self.line(self._last_emit))

    # ----------------------------------------------------------------------------------- rendering
    @property
    def elapsed(self) -> float:
        return self._clock() - self.started

    def rate(self, now: float | None = None) -> float | None:
        """Units per second in this stage, ``None`` before any time has passed."""
        elapsed = (self._clock() if now is None else now) - self.started
        if elapsed <= 0:
            return None
        return (self.done - self.initial) / elapsed

    def eta(self, now: float | None = None) -> float | None:
        """Seconds left at the current rate; ``None`` without a total or a rate."""
        rate = self.rate(now)
        if self.total is None or rate is None or rate <= 0:
            return None
        return max(self.total - self.done, 0) / rate

    def line(self, now: float | None = None) -> str:
        now = self._clock() if now is None else now
        count = format_count(self.done)
        if self.total is not None:
            count += f"/{format_count(self.total)} {self.unit}"
            if self.total > 0:
                count += f" ({100 * self.done / self.total:.0f}%)"
        else:
            count += f" {self.unit}"
        parts = [count]
        rate = self.rate(now)
        if self.finished:
            parts[0] += f" in {format_duration(now - self.started)}"
        if rate is not None and self.done > self.initial:
            parts.append(format_rate(rate, self.unit))
        if not self.finished and self.total is not None and self.done < self.total:
            eta = self.eta(now)
            parts.append(f"ETA {format_duration(eta)}" if eta is not None else "ETA ?")
        parts.extend(f"{key} {value}" for key, value in self._details.items())
        return f"{self.what}: " + ", ".join(parts)

    # ------------------------------------------------------------------------------------ internal
    def _set_details(self, details: Mapping[str, object]) -> None:
        for key, value in details.items():
            self._details[key.replace("_", " ")] = str(value)

    def _maybe_emit(self, force: bool) -> None:
        now = self._clock()
        if force or now - self._last_emit >= self.every_s:
            self._last_emit = now
            self.emit(self.line(now))


def log_done(
    what: str,
    done: int,
    seconds: float,
    *,
    unit: str = "items",
    emit: Callable[[str], None] | None = None,
    **details: object,
) -> None:
    """Log the final line of work measured as a whole, e.g. the rows one table got in a pass."""
    now = [0.0]
    progress = Progress(what, None, unit=unit, emit=emit, clock=lambda: now[0])
    now[0] = seconds
    progress.done = done
    progress.finish(**details)
