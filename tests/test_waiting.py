"""The one wait for a condition (tests.waiting): it returns as soon as the condition holds, and
a wait that runs out names what it was waiting for in one line."""

from __future__ import annotations

import asyncio

import pytest

from tests.waiting import WaitTimeout, wait_for, wait_for_event, wait_for_sync


async def test_wait_for_returns_once_the_condition_holds() -> None:
    asked: list[int] = []

    def third_time() -> bool:
        asked.append(1)
        return len(asked) == 3

    await wait_for(third_time, what="the third ask", interval_s=0)
    assert len(asked) == 3


async def test_wait_for_takes_a_coroutine_check() -> None:
    async def ready() -> bool:
        await asyncio.sleep(0)
        return True

    await wait_for(ready, what="ready")


async def test_a_wait_that_runs_out_names_what_it_waited_for() -> None:
    with pytest.raises(WaitTimeout) as caught:
        await wait_for(lambda: False, what="ann opted out", timeout_s=0.05)
    assert str(caught.value) == "timed out after 0.05 s waiting for ann opted out"
    assert isinstance(caught.value, AssertionError)  # pytest reports a failure, not an error


async def test_an_exception_from_the_check_ends_the_wait_at_once() -> None:
    def gone() -> bool:
        raise AssertionError("the daemon stopped")

    with pytest.raises(AssertionError, match="the daemon stopped"):
        await wait_for(gone, what="never", timeout_s=3600)


async def test_wait_for_event_returns_once_set_and_names_it_when_it_never_is() -> None:
    event = asyncio.Event()
    asyncio.get_running_loop().call_soon(event.set)
    await wait_for_event(event, what="the event")
    with pytest.raises(WaitTimeout, match="waiting for the client idling"):
        await wait_for_event(asyncio.Event(), what="the client idling", timeout_s=0.05)


def test_wait_for_sync_returns_once_the_condition_holds_and_names_it_otherwise() -> None:
    asked: list[int] = []
    wait_for_sync(lambda: asked.append(1) or len(asked) == 2, what="the second ask",
                  interval_s=0)
    assert len(asked) == 2
    with pytest.raises(WaitTimeout, match=r"^timed out after 0\.05 s waiting for nothing$"):
        wait_for_sync(lambda: False, what="nothing", timeout_s=0.05)
