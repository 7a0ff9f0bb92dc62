"""Bounds of the fuzz tests: examples per test, and a wall-clock limit that turns a hang into a failure."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from hypothesis import HealthCheck, settings


class Hang(AssertionError):
    """An example ran past its time limit."""


@contextmanager
def time_limit(seconds: int, example: Any) -> Iterator[None]:
    """Raise :class:`Hang` naming ``example`` if the block runs longer than ``seconds`` (main thread)."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise Hang(f"still running after {seconds} s: {example!r}")

    previous = signal.signal(signal.SIGALRM, expire)
    # An outer alarm (pytest-timeout's signal method) is put back with the time it had left.
    outer = signal.alarm(seconds)
    started = time.monotonic()
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        if outer:
            signal.alarm(max(1, outer - int(time.monotonic() - started)))


def fuzz_settings(max_examples: int) -> settings:
    """Bounded fuzzing: a fixed number of examples, no example database written into the tree.

    Hangs are caught by :func:`time_limit`, not by Hypothesis' per-example deadline, which would
    flag a slow machine rather than a hang.
    """
    return settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
