"""Waiting in tests for something the system should bring about: the one way, for the whole suite
(and for tests.servers, bench/ and scripts/demo.py, so no pytest here).

    await wait_for(lambda: world.opted_out() == {"ann@example.com"}, what="ann opted out")
    await wait_for_event(idling, what="the client idling")
    wait_for_sync(lambda: not alive(pid), what=f"process {pid} to go")

A wait is a liveness bound, not a timing: the timeout is generous (a loaded CI machine with two
cores is slow, not wrong), and when it passes the error names what never happened. How fast a
thing happens is measured in bench/, never asserted here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

__all__ = ["DEFAULT_TIMEOUT_S", "WaitTimeout", "wait_for", "wait_for_event", "wait_for_sync"]

DEFAULT_TIMEOUT_S = 60.0


class WaitTimeout(AssertionError):
    """A condition a test waited for never came true; an AssertionError, so pytest reports the
    test as failed (not errored) with this one line."""


def _timed_out(what: str, timeout_s: float) -> WaitTimeout:
    return WaitTimeout(f"timed out after {timeout_s:g} s waiting for {what}")


async def wait_for(
    predicate: Callable[[], bool | Awaitable[bool]],
    *,
    what: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    interval_s: float = 0.01,
) -> None:
    """Return once `predicate()` is true (it may be a coroutine function, e.g. a browser
    check); raise WaitTimeout naming `what` after `timeout_s`. Exceptions from the predicate
    propagate at once (a predicate may raise to say "this will never happen")."""
    deadline = time.monotonic() + timeout_s
    while True:
        asked_at = time.monotonic()
        outcome = predicate()
        if not isinstance(outcome, bool):
            outcome = await outcome
        if outcome:
            return
        now = time.monotonic()
        if now > deadline:
            raise _timed_out(what, timeout_s)
        # A slow check (`mailer status` in a subprocess) rests as long as it took, so that
        # waiting never takes more than half of a CPU shared with the system under test.
        await asyncio.sleep(max(interval_s, now - asked_at))


async def wait_for_event(
    event: asyncio.Event, *, what: str, timeout_s: float = DEFAULT_TIMEOUT_S
) -> None:
    """Return once `event` is set; raise WaitTimeout naming `what` after `timeout_s`."""
    try:
        await asyncio.wait_for(event.wait(), timeout_s)
    except TimeoutError:
        raise _timed_out(what, timeout_s) from None


def wait_for_sync(
    predicate: Callable[[], bool],
    *,
    what: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    interval_s: float = 0.01,
) -> None:
    """`wait_for` for code without an event loop (blocking tests, server start-up)."""
    deadline = time.monotonic() + timeout_s
    while True:
        asked_at = time.monotonic()
        if predicate():
            return
        now = time.monotonic()
        if now > deadline:
            raise _timed_out(what, timeout_s)
        time.sleep(max(interval_s, now - asked_at))
