"""SIGINT and SIGTERM, handled in one place for every long-running command.

`mailer run` and `mailer campaign send` both wrap their work in `stop_on_signals(stop)`: the
first SIGINT or SIGTERM sets `stop` (every loop finishes the unit of work in hand, then
returns) and gives the signals back to Python's defaults, so a second Ctrl-C interrupts at
once (KeyboardInterrupt: exit 130) and a second SIGTERM terminates.

    stop = asyncio.Event()
    async with stop_on_signals(stop, announce=lambda sig: print(f"{sig.name}: stopping")):
        await work(stop)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _log_signal(sig: signal.Signals) -> None:
    log.info("%s received: finishing the work in hand, then stopping (again to stop at once)",
             sig.name)


@contextlib.asynccontextmanager
async def stop_on_signals(
    stop: asyncio.Event, *, announce: Callable[[signal.Signals], None] = _log_signal
) -> AsyncIterator[asyncio.Event]:
    """Set `stop` on the first SIGINT/SIGTERM; the next one gets the default behaviour."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []

    def restore() -> None:
        for each in installed:
            loop.remove_signal_handler(each)
        installed.clear()

    def on_signal(sig: signal.Signals) -> None:
        announce(sig)
        stop.set()
        restore()

    for sig in SIGNALS:
        # Not available off the main thread or on Windows: then Ctrl-C is KeyboardInterrupt.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
    try:
        yield stop
    finally:
        restore()
