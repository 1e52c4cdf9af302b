"""The one supervised-loop helper: every long-running part of the daemon runs under it.

`supervise(part, work, stop)` calls `work()` (one session of a part: connect, loop until
`stop`, return) again and again until `stop` is set. When `work` raises, the failure is
logged in one line, recorded on the part (`PartState`: what `mailer status` shows) and the
part waits `RECONNECT.delay_s(attempt)` (exponential, jittered, from `mailer.backoff`) before
the next session; a session that reported a success since the last failure starts the count
again. `CancelledError` is never swallowed.

The rule for what stops the daemon instead (`is_programming_error`): a programming error
(`PROGRAMMING_ERRORS`: a TypeError, ValueError, LookupError such as KeyError or IndexError,
AttributeError, NameError, AssertionError, ImportError or NotImplementedError, alone or inside
an ExceptionGroup) is a bug that would recur on every retry, so retrying only hides it; it is
logged with its traceback and re-raised, the daemon's TaskGroup cancels the other parts, and
`mailer run` exits non-zero so systemd (`Restart=on-failure`) and the operator see it. Our own
errors are never bugs, even the one that is also a ValueError (`HeaderInjection`). Everything
else is a transient fault (a server down, the network, the database locked, read-only or full,
an unexpected library error) and is retried with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from mailer.backoff import RECONNECT, Backoff
from mailer.clock import SYSTEM_CLOCK, Clock
from mailer.errors import MailerError

log = logging.getLogger(__name__)

State = Literal["starting", "running", "reconnecting", "stopped"]

PROGRAMMING_ERRORS: tuple[type[BaseException], ...] = (
    TypeError, ValueError, LookupError, AttributeError, NameError, AssertionError, ImportError,
    NotImplementedError,
)


def is_programming_error(exc: BaseException) -> bool:
    """A bug (see the module doc), or an ExceptionGroup (a part's TaskGroup) holding one."""
    if isinstance(exc, BaseExceptionGroup):
        return any(is_programming_error(inner) for inner in exc.exceptions)
    return isinstance(exc, PROGRAMMING_ERRORS) and not isinstance(exc, MailerError)


@dataclass
class PartState:
    """What one part of the daemon is doing, as the heartbeat records it (times ISO 8601)."""

    name: str
    state: State = "starting"
    since: str = ""
    last_error: str = ""
    last_error_at: str = ""
    last_success_at: str = ""
    failures: int = 0  # failed sessions since the part started
    details: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"state": self.state, "since": self.since, "last_error": self.last_error,
                "last_error_at": self.last_error_at, "last_success_at": self.last_success_at,
                "failures": self.failures, **self.details}


class Part:
    """A supervised part's state, updated by the part itself and by `supervise`.

    `on_change` is called after every change of `state.state`, so the heartbeat can be
    written at once rather than at the next tick."""

    def __init__(self, name: str, *, clock: Clock = SYSTEM_CLOCK,
                 on_change: Callable[[Part], None] | None = None,
                 on_failure: Callable[[Part], None] | None = None) -> None:
        self.name = name
        self.clock = clock
        self.state = PartState(name=name, since=self._now())
        self._on_change = on_change
        self._on_failure = on_failure
        self._failed_since_success = 0

    def _now(self) -> str:
        return self.clock.now().isoformat(timespec="seconds")

    def _set(self, state: State) -> None:
        if self.state.state != state:
            self.state.state = state
            self.state.since = self._now()
            if self._on_change is not None:
                self._on_change(self)

    def running(self) -> None:
        """The part is connected and working (an inbox in IDLE, a loop waiting for work)."""
        self._set("running")

    def succeeded(self, **details: Any) -> None:
        """A unit of work went through; `details` are shown by `mailer status`."""
        self.state.last_success_at = self._now()
        self.state.details.update(details)
        self._failed_since_success = 0
        self._set("running")

    def failed(self, exc: BaseException) -> int:
        """Record a failed session; returns the attempt number for the backoff."""
        self._failed_since_success += 1
        self.state.failures += 1
        self.state.last_error = describe(exc)
        self.state.last_error_at = self._now()
        self._set("reconnecting")
        if self._on_failure is not None:
            self._on_failure(self)
        return self._failed_since_success

    def stopped(self) -> None:
        self._set("stopped")


def describe(exc: BaseException) -> str:
    """One line for a log or the status: our errors say what is at fault; others add their
    class, since `str()` of a library error is often bare ("database is locked")."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, MailerError) else f"{type(exc).__name__}: {text}"


async def supervise(
    part: Part,
    work: Callable[[], Awaitable[None]],
    stop: asyncio.Event,
    *,
    policy: Backoff = RECONNECT,
) -> None:
    """Run `work` until `stop` is set, backing off after each failure (see the module doc)."""
    try:
        while not stop.is_set():
            try:
                await work()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if is_programming_error(exc):
                    log.critical("%s: programming error; stopping the daemon: %s", part.name,
                                 describe(exc), exc_info=True)
                    raise
                attempt = part.failed(exc)
                delay_s = policy.delay_s(attempt)
                # The traceback of an error we did not foresee is worth one look, not one
                # per retry; our own errors and OS errors are fully said in one line.
                foreseen = isinstance(exc, MailerError | OSError)
                log.warning("%s: %s; retrying in %.1f s (attempt %d)", part.name,
                            describe(exc), delay_s, attempt,
                            exc_info=not foreseen and attempt == 1)
                await sleep_unless_stopped(delay_s, stop)
            else:
                if not stop.is_set():
                    # A session that returns by itself is over: start another after the
                    # shortest backoff, never in a hot loop.
                    log.debug("%s: session ended; starting another", part.name)
                    await sleep_unless_stopped(policy.delay_s(1), stop)
    finally:
        part.stopped()


async def sleep_unless_stopped(seconds: float, stop: asyncio.Event) -> None:
    """Sleep `seconds`, or less if `stop` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()


async def wait_any(stop: asyncio.Event, wake: asyncio.Event, timeout_s: float) -> None:
    """Wait until `stop` or `wake` is set, or `timeout_s` passes."""
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.wait(waiters)
