"""The supervised-loop helper and the one place signals are handled."""

from __future__ import annotations

import asyncio
import os
import signal
import socket

import pytest

from mailer.backoff import Backoff
from mailer.errors import HeaderInjection, ImapError
from mailer.lifecycle.signals import stop_on_signals
from mailer.lifecycle.supervise import Part, supervise

QUICK = Backoff(base_s=0.01, max_s=0.04, jitter=0.2)


async def test_a_failing_part_is_retried_with_backoff_and_its_state_says_why() -> None:
    stop = asyncio.Event()
    part = Part("inbox")
    sessions = 0
    seen_states: list[str] = []
    went_through = asyncio.Event()

    async def work() -> None:
        nonlocal sessions
        sessions += 1
        seen_states.append(part.state.state)
        if sessions < 4:
            raise ImapError(f"127.0.0.1:1: connection refused ({sessions})")
        part.succeeded(last_pass_at="now")
        went_through.set()
        await stop.wait()

    task = asyncio.create_task(supervise(part, work, stop, policy=QUICK))
    await asyncio.wait_for(went_through.wait(), timeout=10)
    assert sessions == 4
    assert seen_states == ["starting", "reconnecting", "reconnecting", "reconnecting"]
    assert part.state.state == "running"
    assert part.state.failures == 3
    assert part.state.last_error == "127.0.0.1:1: connection refused (3)"
    assert part.state.last_error_at != ""
    assert part.state.details == {"last_pass_at": "now"}
    stop.set()
    await task
    assert part.state.state == "stopped"


async def test_an_unforeseen_library_error_is_retried_not_fatal() -> None:
    stop = asyncio.Event()
    part = Part("outbox")
    calls = 0

    async def work() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError(28, "No space left on device")
        stop.set()

    await supervise(part, work, stop, policy=QUICK)
    assert calls == 2
    assert part.state.last_error == "OSError: [Errno 28] No space left on device"


async def test_a_programming_error_stops_the_part_and_is_raised() -> None:
    stop = asyncio.Event()
    part = Part("campaigns")

    async def work() -> None:
        raise TypeError("send_due() got an unexpected keyword argument 'holdr'")

    with pytest.raises(TypeError):
        await supervise(part, work, stop, policy=QUICK)
    assert part.state.state == "stopped"


@pytest.mark.parametrize("bug", [
    ValueError("invalid literal for int() with base 10: 'x'"),
    KeyError("customer_id"),
    IndexError("list index out of range"),
    AttributeError("'NoneType' object has no attribute 'id'"),
    AssertionError(),
    ExceptionGroup("a part's task group", [ImapError("down"), KeyError("id")]),
])
async def test_every_kind_of_programming_error_stops_the_part(bug: Exception) -> None:
    stop = asyncio.Event()
    calls = 0

    async def work() -> None:
        nonlocal calls
        calls += 1
        raise bug

    with pytest.raises(type(bug)):
        await supervise(Part("outbox"), work, stop, policy=QUICK)
    assert calls == 1  # never retried


@pytest.mark.parametrize("fault", [
    HeaderInjection("an address with a line break"),  # ours, though also a ValueError
    OSError(110, "Connection timed out"),
    socket.gaierror(-3, "Temporary failure in name resolution"),
    ExceptionGroup("a part's task group", [ImapError("down")]),
])
async def test_our_errors_and_transient_faults_are_retried(fault: Exception) -> None:
    stop = asyncio.Event()
    calls = 0

    async def work() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise fault
        stop.set()

    await supervise(Part("inbox"), work, stop, policy=QUICK)
    assert calls == 2


async def test_cancelling_a_supervised_part_is_never_swallowed() -> None:
    stop = asyncio.Event()
    part = Part("inbox")
    started = asyncio.Event()

    async def work() -> None:
        started.set()
        await asyncio.sleep(3600)

    task = asyncio.create_task(supervise(part, work, stop, policy=QUICK))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def test_stop_during_a_long_backoff_ends_the_part_at_once() -> None:
    stop = asyncio.Event()
    changed = asyncio.Event()
    part = Part("inbox", on_change=lambda part: changed.set())

    async def work() -> None:
        raise ImapError("down")

    slow = Backoff(base_s=3600.0, max_s=3600.0)
    task = asyncio.create_task(supervise(part, work, stop, policy=slow))
    await asyncio.wait_for(changed.wait(), timeout=10)
    assert part.state.state == "reconnecting"
    stop.set()
    await asyncio.wait_for(task, timeout=10)
    assert part.state.state == "stopped"


async def test_the_first_sigterm_sets_stop_and_announces_it() -> None:
    stop = asyncio.Event()
    announced: list[signal.Signals] = []
    async with stop_on_signals(stop, announce=announced.append):
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(stop.wait(), timeout=10)
    assert announced == [signal.SIGTERM]
