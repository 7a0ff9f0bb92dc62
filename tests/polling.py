"""Waiting in tests: poll for the state an assertion is about, up to a deadline; never a fixed sleep.

A fixed sleep is either too short on a loaded machine (the test fails for no reason) or longer
than needed everywhere else. Polling returns as soon as the state is reached, and the deadline
turns a state that never comes into a failure that names what was awaited.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

#: Generous by default: the tests share two cores with other work, and a deadline is only reached
#: when something is wrong.
DEFAULT_TIMEOUT = 120.0


def wait_for(
    check: Callable[[], T], what: str, *, timeout: float = DEFAULT_TIMEOUT, interval: float = 0.1
) -> T:
    """Call ``check()`` until it returns a truthy value, and return that value.

    :param check: Reads the state; any truthy result ends the wait.
    :param what: The awaited state, for the failure message.
    :param timeout: Seconds before the test fails.
    :param interval: Seconds between two reads.
    """
    deadline = time.monotonic() + timeout
    result = check()
    while not result:
        if time.monotonic() > deadline:
            raise AssertionError(_gave_up(what, timeout, result))
        time.sleep(interval)
        result = check()
    return result


async def await_for(
    check: Callable[[], T | Awaitable[T]],
    what: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.02,
) -> T:
    """The event-loop form of :func:`wait_for`: ``check`` may be a plain or a coroutine function,
    and the loop keeps running the tasks under test between two reads."""
    deadline = time.monotonic() + timeout
    result = await _read(check)
    while not result:
        if time.monotonic() > deadline:
            raise AssertionError(_gave_up(what, timeout, result))
        await asyncio.sleep(interval)
        result = await _read(check)
    return result


async def _read(check: Callable[[], T | Awaitable[T]]) -> T:
    result = check()
    if inspect.isawaitable(result):
        return await result
    return result


def _gave_up(what: str, timeout: float, last: object) -> str:
    return f"gave up after {timeout:.0f} s waiting for {what} (last read: {last!r})"
